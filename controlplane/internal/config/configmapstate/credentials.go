package configmapstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The state document's upstream credentials live in a Secret, not in the
// ConfigMap: anyone who may read ConfigMaps in the release namespace
// could read them there. The document the configuration code reads and
// writes (package configfile) still has them inline, as
// upstreams[i].credentials; split takes them out before the ConfigMap is
// written, and combine puts them back in when the document is read.
//
// The Secret's document (key DefaultSecretKey):
//
//	{"format": 1, "upstreams": {"<prefix>": {"url": "<url>", "credentials": {...}}}}
//
// Each entry names the URL its credentials were written for: the two
// objects are written one after the other, and replicas may interleave
// their writes, so an upstream whose URL changed meanwhile never gets
// credentials meant for another registry.

// credentialsFormat versions the Secret's document.
const credentialsFormat = 1

type credentialsDoc struct {
	Format    int                        `json:"format"`
	Upstreams map[string]credentialEntry `json:"upstreams"`
}

type credentialEntry struct {
	URL         string          `json:"url"`
	Credentials json.RawMessage `json:"credentials"`
}

// errNotJSON: the document is not the JSON object split understands.
var errNotJSON = errors.New("not a JSON state document")

// parseDoc reads the document's top level and its upstream objects; ok is
// false when it is not a JSON object or its upstreams are not objects
// (such a document is stored and returned as it is: the configuration
// code reports what is wrong with it).
func parseDoc(data []byte) (top map[string]json.RawMessage, ups []map[string]json.RawMessage, ok bool) {
	if err := json.Unmarshal(data, &top); err != nil || top == nil {
		return nil, nil, false
	}
	if raw, has := top["upstreams"]; has && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if err := json.Unmarshal(raw, &ups); err != nil {
			return nil, nil, false
		}
	}
	return top, ups, true
}

func stringField(o map[string]json.RawMessage, key string) string {
	var s string
	_ = json.Unmarshal(o[key], &s)
	return s
}

// split returns the document without credentials (data itself when it has
// none) and the credentials by prefix.
func split(data []byte) ([]byte, map[string]credentialEntry, error) {
	top, ups, ok := parseDoc(data)
	if !ok {
		return data, nil, nil
	}
	creds := map[string]credentialEntry{}
	for i, u := range ups {
		raw, has := u["credentials"]
		if !has {
			continue
		}
		p := stringField(u, "prefix")
		if p == "" {
			return nil, nil, fmt.Errorf("%w: upstreams[%d] has credentials but no prefix", errNotJSON, i)
		}
		creds[p] = credentialEntry{URL: stringField(u, "url"), Credentials: raw}
		delete(u, "credentials")
	}
	if len(creds) == 0 {
		return data, nil, nil
	}
	out, err := marshalDoc(top, ups)
	if err != nil {
		return nil, nil, err
	}
	return out, creds, nil
}

// combine puts the Secret's credentials back into the ConfigMap's
// document: into each upstream with the same prefix and URL that has
// none inline (a document from before the move keeps its inline ones).
// It returns doc itself when nothing is added.
func combine(doc []byte, creds map[string]credentialEntry) []byte {
	if len(creds) == 0 {
		return doc
	}
	top, ups, ok := parseDoc(doc)
	if !ok {
		return doc
	}
	added := false
	for _, u := range ups {
		if _, has := u["credentials"]; has {
			continue
		}
		if e, ok := creds[stringField(u, "prefix")]; ok && e.URL == stringField(u, "url") {
			u["credentials"] = e.Credentials
			added = true
		}
	}
	if !added {
		return doc
	}
	out, err := marshalDoc(top, ups)
	if err != nil {
		return doc
	}
	return out
}

// inlineCredentials reports whether the ConfigMap's document still holds
// credentials (written before they moved to the Secret).
func inlineCredentials(doc []byte) bool {
	_, ups, ok := parseDoc(doc)
	if !ok {
		return false
	}
	for _, u := range ups {
		if _, has := u["credentials"]; has {
			return true
		}
	}
	return false
}

func marshalDoc(top map[string]json.RawMessage, ups []map[string]json.RawMessage) ([]byte, error) {
	raw, err := json.Marshal(ups)
	if err != nil {
		return nil, fmt.Errorf("encode upstreams: %w", err)
	}
	top["upstreams"] = raw
	out, err := json.MarshalIndent(top, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state document: %w", err)
	}
	return append(out, '\n'), nil
}

// encodeCredentials is the Secret's document.
func encodeCredentials(creds map[string]credentialEntry) ([]byte, error) {
	if creds == nil {
		creds = map[string]credentialEntry{}
	}
	b, err := json.Marshal(credentialsDoc{Format: credentialsFormat, Upstreams: creds})
	if err != nil {
		return nil, fmt.Errorf("encode credentials: %w", err)
	}
	return b, nil
}

// decodeCredentials reads the Secret's document; the error never quotes
// it.
func decodeCredentials(b []byte) (map[string]credentialEntry, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var d credentialsDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, errors.New("not a JSON credentials document")
	}
	if d.Format != credentialsFormat {
		return nil, fmt.Errorf("format %d is not supported (want %d)", d.Format, credentialsFormat)
	}
	return d.Upstreams, nil
}
