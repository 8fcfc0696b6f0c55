package clash

import (
	"slices"
	"time"
)

// HistoryLength is how many probe results a node keeps.
const HistoryLength = 10

// Health is what is known about one node's health. The zero value is a
// node never probed: not alive.
type Health struct {
	// Alive: the last probe succeeded.
	Alive bool
	// Latency of the last successful probe.
	Latency time.Duration
	// LastError of the last failed probe or edge report, scrubbed of the
	// node's secrets. A later success does not clear it (Alive says the
	// node is back).
	LastError string
	// LastChecked is when the last probe finished; zero before the first.
	LastChecked time.Time
	// History holds the last HistoryLength probe latencies, oldest first;
	// a failed probe is a zero.
	History []time.Duration
	// Suspect: an edge reported a failure that no probe has checked yet.
	Suspect bool
}

// record adds one probe result.
func (h *Health) record(at time.Time, d time.Duration, errText string) {
	h.LastChecked = at
	h.Suspect = false
	if errText == "" {
		h.Alive, h.Latency = true, d
	} else {
		h.Alive, h.LastError, d = false, errText, 0
	}
	h.History = append(h.History, d)
	if len(h.History) > HistoryLength {
		h.History = slices.Delete(h.History, 0, len(h.History)-HistoryLength)
	}
}

// reported marks an edge's dial failure.
func (h *Health) reported(errText string) {
	h.Suspect = true
	h.LastError = errText
}

// clone is a copy that shares nothing with h.
func (h Health) clone() Health {
	h.History = slices.Clone(h.History)
	return h
}
