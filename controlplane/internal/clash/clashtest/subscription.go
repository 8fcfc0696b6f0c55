package clashtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// ClashYAML is a Clash subscription with nodes as its proxies: list (each
// map written as a JSON flow mapping, which is YAML).
func ClashYAML(nodes ...map[string]any) []byte {
	var b bytes.Buffer
	b.WriteString("mixed-port: 7890\nmode: rule\nproxies:\n")
	for _, n := range nodes {
		j, err := json.Marshal(n)
		if err != nil {
			panic(err) // test input
		}
		b.WriteString("  - ")
		b.Write(j)
		b.WriteByte('\n')
	}
	b.WriteString("rules:\n  - MATCH,DIRECT\n")
	return b.Bytes()
}

// Links is a plain share-link subscription, one link per line.
func Links(links ...string) []byte { return []byte(strings.Join(links, "\n") + "\n") }

// Base64 encodes a subscription the way providers do: standard base64,
// no line breaks.
func Base64(body []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(body))
}
