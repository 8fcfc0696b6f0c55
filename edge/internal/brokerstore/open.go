package brokerstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// Open implements blob.Store: a GET of the grant's presigned URL, with a
// Range for anything but the whole object. A URL the storage refuses (403:
// expired, or signed with a rotated key) costs one more Authorize and one
// retry.
func (s *Store) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	scope, err := scopeFor(ctx, "open", key)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("broker open %s: negative offset %d", key, offset)
	}
	g, err := s.grantFor(ctx, "open", key, scope)
	if err != nil {
		return nil, err
	}
	if length == 0 {
		if offset > g.size {
			return nil, fmt.Errorf("broker open %s: offset %d outside object of %d bytes", key, offset, g.size)
		}
		return emptyBody{}, nil
	}
	for retried := false; ; retried = true {
		rc, err := s.get(ctx, key, g, offset, length)
		if !errors.Is(err, errURLRefused) || retried {
			if errors.Is(err, blob.ErrNotFound) || errors.Is(err, errURLRefused) {
				s.grants.drop(key)
			}
			return rc, err
		}
		s.grants.drop(key)
		s.log.Debug("presigned URL refused; asking the broker again", "key", key)
		if g, err = s.authorize(ctx, "open", key, scope); err != nil {
			return nil, err
		}
	}
}

// errURLRefused is a 403 from the storage on a presigned URL.
var errURLRefused = errors.New("presigned URL refused by the storage")

// get reads [offset, offset+length) from url. Errors never contain the URL:
// it is a credential while it is valid.
func (s *Store) get(ctx context.Context, key string, g grant, offset, length int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url, nil)
	if err != nil {
		return nil, fmt.Errorf("broker open %s: bad presigned URL", key)
	}
	ranged := offset > 0 || length >= 0
	if ranged {
		r := fmt.Sprintf("bytes=%d-", offset)
		if length >= 0 {
			r += strconv.FormatInt(offset+length-1, 10)
		}
		req.Header.Set("Range", r)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("broker open %s: GET: %w", key, withoutURL(err))
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if offset > 0 {
			resp.Body.Close()
			return nil, fmt.Errorf("broker open %s: the storage ignored the Range header", key)
		}
		return limit(resp.Body, length), nil
	case http.StatusPartialContent:
		start, _, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != offset {
			resp.Body.Close()
			return nil, fmt.Errorf("broker open %s: Content-Range %q does not start at %d", key, resp.Header.Get("Content-Range"), offset)
		}
		return limit(resp.Body, length), nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		// An offset right at the end is an empty read. The size is the
		// answer's "bytes */SIZE" when it has one, else the grant's.
		size, ok := unsatisfiedSize(resp.Header.Get("Content-Range"))
		if !ok {
			size = g.size
		}
		if offset == size {
			return emptyBody{}, nil
		}
		return nil, fmt.Errorf("broker open %s: offset %d outside the object", key, offset)
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("broker open %s: %w", key, blob.ErrNotFound)
	case http.StatusForbidden:
		resp.Body.Close()
		return nil, fmt.Errorf("broker open %s: %w", key, errURLRefused)
	}
	resp.Body.Close()
	return nil, fmt.Errorf("broker open %s: storage answered %s", key, resp.Status)
}

// withoutURL strips the URL from an http.Client error.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// limit returns body cut at length bytes (length < 0: all of it).
func limit(body io.ReadCloser, length int64) io.ReadCloser {
	if length < 0 {
		return body
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(body, length), body}
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*").
func parseContentRange(v string) (start, end int64, err error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("not a byte range: %q", v)
	}
	span, _, _ := strings.Cut(rest, "/")
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return 0, 0, fmt.Errorf("not a byte range: %q", v)
	}
	if start, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, err
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil {
		return 0, 0, err
	}
	return start, end, nil
}

// unsatisfiedSize parses the "bytes */SIZE" of a 416 answer.
func unsatisfiedSize(v string) (int64, bool) {
	rest, ok := strings.CutPrefix(v, "bytes */")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	return n, err == nil
}
