//go:build bench

package edge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// newClient returns the HTTP client every contender is measured with. No
// transparent gzip (blobs are opaque), and enough idle connections that
// the latency runs never pay for a new connection.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableCompression:  true,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     time.Minute,
	}}
}

// copyBufSize is the client's read size: large enough that the client is
// never the bottleneck at loopback speed, the same for every contender.
const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// sink discards what it is given. Unlike io.Discard it has no ReadFrom,
// whose 8 KiB reads would make the client the bottleneck.
type sink struct{}

func (sink) Write(p []byte) (int, error) { return len(p), nil }

// drain reads r to the end through the shared buffer size.
func drain(r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(sink{}, r, *bp)
}

// transfer is one measured download.
type transfer struct {
	Bytes   int64
	Elapsed time.Duration // request sent → last byte read
	Header  http.Header
}

// MBps is the throughput in 10^6 bytes per second.
func (x transfer) MBps() float64 { return float64(x.Bytes) / x.Elapsed.Seconds() / 1e6 }

// get downloads url and checks a 200 with want bytes (want < 0: any).
func get(ctx context.Context, c *http.Client, url string, want int64) (transfer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return transfer{}, fmt.Errorf("request %s: %w", url, err)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return transfer{}, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	n, err := drain(resp.Body)
	x := transfer{Bytes: n, Elapsed: time.Since(start), Header: resp.Header}
	switch {
	case err != nil:
		return x, fmt.Errorf("GET %s: body after %d bytes: %w", url, n, err)
	case resp.StatusCode != http.StatusOK:
		return x, fmt.Errorf("GET %s: status %s", url, resp.Status)
	case want >= 0 && n != want:
		return x, fmt.Errorf("GET %s: %d bytes, want %d", url, n, want)
	}
	return x, nil
}

// getObject downloads an S3 object with the SDK: the "direct GetObject"
// baseline of the S3 store.
func getObject(ctx context.Context, c *awss3.Client, bucket, key string, want int64) (transfer, error) {
	start := time.Now()
	out, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return transfer{}, fmt.Errorf("GetObject %s/%s: %w", bucket, key, err)
	}
	defer out.Body.Close()
	n, err := drain(out.Body)
	x := transfer{Bytes: n, Elapsed: time.Since(start)}
	if err != nil {
		return x, fmt.Errorf("GetObject %s/%s: body after %d bytes: %w", bucket, key, n, err)
	}
	if n != want {
		return x, fmt.Errorf("GetObject %s/%s: %d bytes, want %d", bucket, key, n, want)
	}
	return x, nil
}

// settleDisk writes back dirty pages before a measurement, so one
// contender's writes are not flushed on the next contender's time.
func settleDisk() { syscall.Sync() }

// latencies is the outcome of a fixed-rate run.
type latencies struct {
	P50, P99, P999 time.Duration // unanswered counts as +Inf (see pct)
	Sent           int
	Errors         int           // failed requests (not timeouts)
	Unanswered     int           // no answer within the grace period
	Grace          time.Duration // how long after the last send answers were awaited
	Rate           float64       // requests sent per second
	FirstErr       error
}

// unanswered is the latency given to a request that got no answer in time:
// it sorts after every real one.
const unanswered = time.Duration(math.MaxInt64)

// pct formats a percentile, which is "> grace" when it falls among the
// unanswered requests.
func (l latencies) pct(d time.Duration) string {
	if d == unanswered {
		return "> " + l.Grace.String()
	}
	return ms(d)
}

// openLoop sends GET url at rate requests per second for d, whatever the
// server does (open loop: a slow answer does not delay the next request,
// which is what kubelets on many nodes do to an edge). A request's latency
// runs from the moment it left the generator's schedule to its last body
// byte, so time spent queued behind slow answers counts (no coordinated
// omission); the generator's own timer slack is not counted (requests are
// dispatched in small bursts when the timer wakes late). Answers are awaited
// for grace after the last send: an overloaded server would otherwise keep
// the run going for minutes, and what is still open then is unanswered.
func openLoop(ctx context.Context, c *http.Client, url string, hdr http.Header, rate int, d, grace time.Duration) latencies {
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	ctx, cancel := context.WithTimeout(ctx, d+grace)
	defer cancel()
	type job struct {
		i   int
		due time.Time
	}
	jobs := make(chan job, n)
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	// Enough workers that a stall of the server shows as latency, never
	// as requests silently not sent.
	const workers = 256
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if ctx.Err() != nil {
					lat[j.i] = unanswered
					continue
				}
				err := manifestGet(ctx, c, url, hdr)
				switch {
				case err != nil && ctx.Err() != nil:
					lat[j.i] = unanswered
				case err != nil:
					errs[j.i] = err
				default:
					lat[j.i] = time.Since(j.due)
				}
			}
		}()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		now := time.Now()
		if now.Before(due) {
			now = due
		}
		jobs <- job{i, now}
	}
	sent := time.Since(start)
	close(jobs)
	wg.Wait()
	res := latencies{Sent: n, Rate: float64(n) / sent.Seconds(), Grace: grace}
	var ok []time.Duration
	for i, err := range errs {
		switch {
		case err != nil:
			res.Errors++
			if res.FirstErr == nil {
				res.FirstErr = err
			}
			continue
		case lat[i] == unanswered:
			res.Unanswered++
		}
		ok = append(ok, lat[i])
	}
	slices.Sort(ok)
	if len(ok) > 0 {
		res.P50, res.P99, res.P999 = quantile(ok, 0.50), quantile(ok, 0.99), quantile(ok, 0.999)
	}
	return res
}

// quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// manifestGet fetches a manifest and checks it came back whole.
func manifestGet(ctx context.Context, c *http.Client, url string, hdr http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header = hdr.Clone()
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || (resp.ContentLength >= 0 && n != resp.ContentLength) {
		return fmt.Errorf("GET %s: status %d, %d bytes", url, resp.StatusCode, n)
	}
	return nil
}

// wrkResult is what wrk (closed loop: each connection sends its next
// request when the previous answer arrived) reports.
type wrkResult struct {
	ReqPerSec float64
	P50, P99  time.Duration
}

// runWrk runs Debian's wrk against url with one thread, conns connections
// and the Accept header, for d. wrk 4.1 has no fixed-rate mode, so this is
// the throughput ceiling, not a latency-at-rate figure.
func runWrk(ctx context.Context, wrk, url, accept string, conns int, d time.Duration) (wrkResult, error) {
	cmd := exec.CommandContext(ctx, wrk, "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s",
		"--latency", "-H", "Accept: "+accept, url)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", url, err, stderr.String())
	}
	return parseWrk(out.String())
}

// parseWrk reads the "Latency Distribution" and "Requests/sec" lines.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk Requests/sec %q: %w", f[1], err)
			}
			r.ReqPerSec = v
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			v, err := time.ParseDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("wrk latency %q: %w", f[1], err)
			}
			if f[0] == "50%" {
				r.P50 = v
			} else {
				r.P99 = v
			}
		case len(f) >= 1 && strings.HasPrefix(sc.Text(), "  Non-2xx"):
			return r, fmt.Errorf("wrk saw error responses: %s", strings.TrimSpace(sc.Text()))
		}
	}
	if r.ReqPerSec == 0 || r.P99 == 0 {
		return r, errors.New("wrk output without Requests/sec or latency distribution:\n" + out)
	}
	return r, nil
}
