package proxydial

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

// maxSpecFile caps a node file read through "@FILE".
const maxSpecFile = 1 << 20

// ParseNodes parses one --proxy value into nodes. The value is anything
// clashnode.Parse reads — a Clash node as a YAML or JSON map, a list of
// such maps, a Clash file with a proxies: list, share links (ss://,
// vmess://, trojan://, socks5://, http://, ... one a line or separated by
// spaces), a base64-encoded list of links — or "@PATH": any of these read
// from a file (keeps secrets out of the process list). Unlike a
// subscription, a flag value is all or nothing: one bad entry is an error.
// Errors wrap clashnode.ErrInvalid, name the position of the bad entry and never
// echo the value: it holds passwords.
func ParseNodes(value string) ([]*clashnode.Node, error) {
	value = strings.TrimSpace(value)
	if path, ok := strings.CutPrefix(value, "@"); ok {
		data, err := readSpecFile(path)
		if err != nil {
			return nil, err
		}
		value = strings.TrimSpace(string(data))
	}
	if looksLikeLinks(value) {
		value = strings.Join(strings.Fields(value), "\n")
	}
	list, err := clashnode.Parse([]byte(value), clashnode.ParseOptions{})
	if list != nil && len(list.Skipped) > 0 {
		for _, n := range list.Nodes {
			n.Close()
		}
		s := list.Skipped[0]
		return nil, fmt.Errorf("%w: %s: %s", clashnode.ErrInvalid, s.Name, s.Reason)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", clashnode.ErrInvalid, err)
	}
	return list.Nodes, nil
}

func readSpecFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", clashnode.ErrInvalid, err)
	}
	defer func() { _ = f.Close() }() // read-only: the data is already read
	data, err := io.ReadAll(io.LimitReader(f, maxSpecFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", clashnode.ErrInvalid, path, err)
	}
	if len(data) > maxSpecFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", clashnode.ErrInvalid, path, maxSpecFile)
	}
	return data, nil
}

// looksLikeLinks reports whether every word of value is scheme://…: links
// given on one line, separated by spaces.
func looksLikeLinks(value string) bool {
	words := strings.Fields(value)
	if len(words) == 0 {
		return false
	}
	for _, w := range words {
		scheme, _, ok := strings.Cut(w, "://")
		if !ok || scheme == "" || strings.ContainsAny(scheme, "{}[]\"': ") {
			return false
		}
	}
	return true
}
