package registry

import (
	"errors"
	"strconv"
	"strings"
)

// parseRange parses a single-range "bytes=" header against size and returns
// the offset and length. Malformed, multi-range and unsatisfiable ranges are
// errors (416): a registry client that sends them has a bug worth seeing.
func parseRange(spec string, size int64) (off, n int64, err error) {
	rest, ok := strings.CutPrefix(spec, "bytes=")
	if !ok {
		return 0, 0, errors.New("range must use the bytes unit")
	}
	if strings.Contains(rest, ",") {
		return 0, 0, errors.New("multiple ranges are not supported")
	}
	first, last, ok := strings.Cut(strings.TrimSpace(rest), "-")
	if !ok {
		return 0, 0, errors.New("malformed range")
	}
	if first == "" { // suffix: the last N bytes
		k, err := strconv.ParseInt(last, 10, 64)
		if err != nil || k <= 0 {
			return 0, 0, errors.New("malformed suffix range")
		}
		if k > size {
			k = size
		}
		if size == 0 {
			return 0, 0, errors.New("range not satisfiable for an empty blob")
		}
		return size - k, k, nil
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, errors.New("malformed range start")
	}
	if start >= size {
		return 0, 0, errors.New("range starts beyond the end of the blob")
	}
	end := size - 1
	if last != "" {
		e, err := strconv.ParseInt(last, 10, 64)
		if err != nil || e < start {
			return 0, 0, errors.New("malformed range end")
		}
		if e < end {
			end = e
		}
	}
	return start, end - start + 1, nil
}
