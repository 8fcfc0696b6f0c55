package webhook

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// patchOp is one RFC 6902 operation. The webhook writes only "replace" of
// an image and "add" of the annotation (or the annotations map) and of the
// pull Secret (or the imagePullSecrets list).
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// pointer builds an RFC 6901 JSON pointer from unescaped tokens.
func pointer(tokens ...string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}

// Kubernetes asks webhooks to keep warnings under 256 characters and few;
// longer or more may be truncated or dropped by the API server.
const (
	maxWarningLen = 256
	maxWarnings   = 16
	warningPrefix = "k8s-selfhost-repo: "
)

// warn records a warning for the client, clipped to what the API server
// passes on and stripped of anything that is not printable.
func (m *mutation) warn(msg string) {
	switch {
	case len(m.warnings) < maxWarnings-1:
	case len(m.warnings) == maxWarnings-1:
		msg = "further warnings left out"
	default:
		return
	}
	m.warnings = append(m.warnings, clipWarning(warningPrefix+msg))
}

func clipWarning(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) <= maxWarningLen {
		return s
	}
	cut := maxWarningLen - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// quote quotes a value taken from the pod, clipped: images may be long.
func quote(s string) string {
	return strconv.Quote(clip(s))
}
