package configmapstate

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestSplitCombine(t *testing.T) {
	t.Parallel()
	doc := `{"format":1,"upstreams":[{"prefix":"a","url":"https://a.io","credentials":{"username":"ua","password":"pa"}},{"prefix":"b","url":"https://b.io"}]}`
	public, creds, err := split([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(public), "pa") || strings.Contains(string(public), "credentials") || len(creds) != 1 || creds["a"].URL != "https://a.io" {
		t.Fatalf("split: %s, %v", public, creds)
	}
	tests := []struct {
		name  string
		doc   string
		creds map[string]credentialEntry
		want  string // credentials of a, "" for none
	}{
		{"round trip", string(public), creds, `{"username":"ua","password":"pa"}`},
		// Another replica changed a's URL meanwhile: not the credentials
		// written for the old one.
		{"other URL", strings.Replace(string(public), "https://a.io", "https://evil.io", 1), creds, ""},
		{"inline kept", doc, map[string]credentialEntry{"a": {URL: "https://a.io", Credentials: json.RawMessage(`{"username":"x","password":"y"}`)}}, `{"username":"ua","password":"pa"}`},
		{"no Secret", string(public), nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got struct {
				Upstreams []struct {
					Prefix      string          `json:"prefix"`
					Credentials json.RawMessage `json:"credentials"`
				} `json:"upstreams"`
			}
			if err := json.Unmarshal(combine([]byte(tc.doc), tc.creds), &got); err != nil {
				t.Fatal(err)
			}
			for _, u := range got.Upstreams {
				var compact bytes.Buffer
				if u.Credentials != nil {
					if err := json.Compact(&compact, u.Credentials); err != nil {
						t.Fatal(err)
					}
				}
				if u.Prefix == "a" && compact.String() != tc.want {
					t.Fatalf("a's credentials %s, want %s", compact.String(), tc.want)
				}
				if u.Prefix == "b" && u.Credentials != nil {
					t.Fatalf("b got credentials %s", u.Credentials)
				}
			}
		})
	}
	// Documents without credentials, or not JSON, pass unchanged.
	for _, d := range []string{`{"format":1,"upstreams":[{"prefix":"b","url":"https://b.io"}]}`, "not json", "{}"} {
		if p, c, err := split([]byte(d)); err != nil || string(p) != d || c != nil {
			t.Errorf("split(%q) = %q, %v, %v", d, p, c, err)
		}
	}
}
