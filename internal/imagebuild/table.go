package imagebuild

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable prints, per image and platform, the manifest digest and the
// compressed size (manifest + config + layer), and each index's digest.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tPLATFORM\tDIGEST\tCOMPRESSED SIZE")
	for _, im := range r.Images {
		d, err := im.Index.Digest()
		if err != nil {
			return fmt.Errorf("index digest of %s: %w", im.Ref, err)
		}
		fmt.Fprintf(tw, "%s\tindex\t%s\t\n", im.Ref, d)
		for _, p := range im.Platforms {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", im.Ref, platformString(p.Platform), p.Digest, humanSize(p.Size))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// humanSize is n in MiB with one decimal, and in bytes.
func humanSize(n int64) string {
	return fmt.Sprintf("%.1f MiB (%d B)", float64(n)/(1<<20), n)
}
