package clashnode

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/metacubex/mihomo/adapter/outbound"
)

// optionTypes are the option structs of every node type mihomo's
// adapter.ParseProxy builds (adapter/parser.go), plus smux, which wraps
// any of them. TestRedactorCoversParser fails when mihomo gains a type
// that is not here.
var optionTypes = map[string]any{
	"ss": outbound.ShadowSocksOption{}, "ssr": outbound.ShadowSocksROption{},
	"socks5": outbound.Socks5Option{}, "http": outbound.HttpOption{},
	"vmess": outbound.VmessOption{}, "vless": outbound.VlessOption{},
	"snell": outbound.SnellOption{}, "trojan": outbound.TrojanOption{},
	"hysteria": outbound.HysteriaOption{}, "hysteria2": outbound.Hysteria2Option{},
	"wireguard": outbound.WireGuardOption{}, "tuic": outbound.TuicOption{},
	"ssh": outbound.SshOption{}, "mieru": outbound.MieruOption{},
	"anytls": outbound.AnyTLSOption{},
}

// freeFormOptions are the options typed map[string]any, whose keys
// mihomo's adapters read themselves: one variant per plugin.
var freeFormOptions = map[string][]map[string]any{
	"ss": {
		{"plugin": "obfs", "plugin-opts": map[string]any{"mode": "", "host": ""}},
		{"plugin": "v2ray-plugin", "plugin-opts": map[string]any{"mode": "", "host": "", "path": "", "fingerprint": "", "headers": map[string]any{"Authorization": ""}}},
		{"plugin": "gost-plugin", "plugin-opts": map[string]any{"mode": "", "host": "", "path": "", "fingerprint": "", "headers": map[string]any{"Authorization": ""}}},
		{"plugin": "shadow-tls", "plugin-opts": map[string]any{"password": "", "host": "", "fingerprint": "", "alpn": []any{""}}},
		{"plugin": "restls", "plugin-opts": map[string]any{"password": "", "host": "", "version-hint": "", "restls-script": ""}},
		{"smux": map[string]any{"enabled": true, "protocol": "", "brutal-opts": map[string]any{"enabled": true, "up": "", "down": ""}}},
	},
	"snell": {{"obfs-opts": map[string]any{"mode": "", "host": ""}}},
}

// publicOptions are the string options (by path) that are not secrets:
// addresses, algorithm and transport names, public certificates. Every
// other string option of every type must be redacted, so an option
// mihomo adds is a secret until it is listed here.
var publicOptions = map[string]bool{
	"name": true, "type": true, "server": true, "cipher": true, "plugin": true,
	"client-fingerprint": true, "fingerprint": true, "interface-name": true, "ip-version": true,
	"network": true, "sni": true, "servername": true, "alpn": true, "flow": true, "packet-encoding": true,
	"protocol": true, "obfs-protocol": true, "up": true, "down": true, "ports": true, "port-range": true,
	"ca": true, "ca-str": true, "congestion-controller": true, "udp-relay-mode": true,
	"ip": true, "ipv6": true, "dns": true, "allowed-ips": true, "peers.allowed-ips": true, "peers.server": true,
	"host-key": true, "host-key-algorithms": true, "handshake-mode": true, "multiplexing": true, "transport": true,
	"ech-opts.config": true, "grpc-opts.grpc-service-name": true, "h2-opts.host": true, "h2-opts.path": true,
	"http-opts.method": true, "http-opts.path": true, "ws-opts.path": true, "ws-opts.early-data-header-name": true,
	"ws-path": true, "ss-opts.method": true,
	"amnezia-wg-option.i1": true, "amnezia-wg-option.i2": true, "amnezia-wg-option.i3": true,
	"amnezia-wg-option.i4": true, "amnezia-wg-option.i5": true, "amnezia-wg-option.j1": true,
	"amnezia-wg-option.j2": true, "amnezia-wg-option.j3": true,
	"plugin-opts.mode": true, "plugin-opts.host": true, "plugin-opts.path": true, "plugin-opts.fingerprint": true,
	"plugin-opts.alpn": true, "plugin-opts.version-hint": true, "plugin-opts.restls-script": true,
	"obfs-opts.mode": true, "obfs-opts.host": true,
	"smux.protocol": true, "smux.brutal-opts.up": true, "smux.brutal-opts.down": true,
}

// filler fills a node map: every string option gets a marker of its own
// that names its path, so a marker left in redacted text says which
// option leaked.
type filler struct {
	n       int
	markers map[string]string // marker → option path
}

func (f *filler) marker(path string) string {
	f.n++
	m := fmt.Sprintf("MK%03d-%s", f.n, path)
	f.markers[m] = path
	return m
}

// fromStruct fills the options of a mihomo option struct.
func (f *filler) fromStruct(t reflect.Type, prefix string) map[string]any {
	out := map[string]any{}
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, _, _ := strings.Cut(sf.Tag.Get("proxy"), ",")
		if sf.Anonymous && tag == "" {
			for k, v := range f.fromStruct(sf.Type, prefix) {
				out[k] = v
			}
			continue
		}
		if tag == "" || tag == "-" || tag == "dialer-proxy" { // a chain is refused before anything else
			continue
		}
		if v, ok := f.value(sf.Type, prefix+tag); ok {
			out[tag] = v
		}
	}
	return out
}

func (f *filler) value(t reflect.Type, path string) (any, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return f.marker(path), true
	case reflect.Bool:
		return false, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if path == "port" {
			return 443, true
		}
		return 1, true
	case reflect.Struct:
		return f.fromStruct(t, path+"."), true
	case reflect.Slice, reflect.Array:
		e, ok := f.value(t.Elem(), path)
		return []any{e}, ok
	case reflect.Map:
		if t.Elem().Kind() == reflect.Interface {
			return nil, false // free-form: freeFormOptions
		}
		e, ok := f.value(t.Elem(), path+".*")
		return map[string]any{"X-Option": e}, ok
	}
	return nil, false
}

// fillFree fills the empty strings of a freeFormOptions variant.
func (f *filler) fillFree(v any, path string) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if path != "" && strings.HasSuffix(path, "headers") {
				p = path + ".*"
			}
			out[k] = f.fillFree(e, p)
		}
		return out
	case []any:
		return []any{f.fillFree(x[0], path)}
	case string:
		if x == "" {
			return f.marker(path)
		}
	}
	return v
}

func isPublic(path string) bool {
	path = strings.TrimPrefix(path, "peers.")
	return publicOptions[path] || publicOptions["peers."+path]
}

// TestRedactorEveryNodeType runs every node type mihomo parses, with every
// string option filled, through the Redactor and through New: no secret
// option's value survives in the redacted map or in New's error, and the
// public options are left alone.
func TestRedactorEveryNodeType(t *testing.T) {
	t.Parallel()
	type variant struct {
		name string
		m    map[string]any
		f    *filler
	}
	var variants []variant
	for typ, opt := range optionTypes {
		f := &filler{markers: map[string]string{}}
		m := f.fromStruct(reflect.TypeOf(opt), "")
		m["type"], m["port"] = typ, 443
		variants = append(variants, variant{typ, m, f})
		for i, extra := range freeFormOptions[typ] {
			f := &filler{markers: map[string]string{}}
			m := f.fromStruct(reflect.TypeOf(opt), "")
			m["type"], m["port"] = typ, 443
			for k, v := range extra {
				for marker, path := range f.markers {
					if path == k || strings.HasPrefix(path, k+".") {
						delete(f.markers, marker) // replaced by the variant
					}
				}
				m[k] = f.fillFree(v, k)
			}
			variants = append(variants, variant{fmt.Sprintf("%s+%d", typ, i), m, f})
		}
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			raw, err := json.Marshal(v.m)
			if err != nil {
				t.Fatal(err)
			}
			text := string(raw)
			_, nerr := New(v.m)
			if nerr != nil {
				text += "\n" + nerr.Error()
			}
			out := NewRedactor(v.m).Redact(text)
			secrets := 0
			for marker, path := range v.f.markers {
				switch {
				case isPublic(path) && !strings.Contains(out, marker):
					t.Errorf("public option %s was redacted", path)
				case !isPublic(path):
					secrets++
					if strings.Contains(out, marker) {
						t.Errorf("secret option %s survives redaction", path)
					}
				}
			}
			if nerr != nil && regexp.MustCompile(`MK\d{3}-`).MatchString(nerr.Error()) {
				for marker, path := range v.f.markers {
					if !isPublic(path) && strings.Contains(nerr.Error(), marker) {
						t.Errorf("New's error holds secret option %s: %v", path, nerr)
					}
				}
			}
			if secrets == 0 && v.name != "ssh" {
				t.Errorf("no secret option at all: the filler found nothing")
			}
		})
	}
}

// TestRedactorCoversParser: every type mihomo's parser knows is either in
// optionTypes or refused by New as not a proxy, so a type mihomo adds
// cannot reach edges unredacted.
func TestRedactorCoversParser(t *testing.T) {
	t.Parallel()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/metacubex/mihomo").Output()
	if err != nil {
		t.Fatalf("go list mihomo: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "adapter", "parser.go"))
	if err != nil {
		t.Fatal(err)
	}
	types := regexp.MustCompile(`case "([a-z0-9-]+)":`).FindAllStringSubmatch(string(src), -1)
	if len(types) < 10 {
		t.Fatalf("found %d types in adapter/parser.go: the pattern no longer matches", len(types))
	}
	for _, m := range types {
		if _, ok := optionTypes[m[1]]; !ok && !slices.Contains(notProxies, m[1]) {
			t.Errorf("mihomo parses type %q: add its option struct to optionTypes (and its public options to publicOptions)", m[1])
		}
	}
}

// TestRedact: the placeholder, nesting, numbers, and a secret that
// contains another.
func TestRedact(t *testing.T) {
	t.Parallel()
	r := NewRedactor(map[string]any{
		"name": "n", "server": "proxy.example", "password": "hunter2-long", "uuid": "hunter2",
		"auth_str": 123456, "ws-opts": map[string]any{"headers": map[string]any{"Host": "acct.example"}},
		"short": "x", "psk": "y",
	})
	tests := []struct{ in, want string }{
		{"pw hunter2-long uuid hunter2", "pw REDACTED uuid REDACTED"},
		{"auth 123456 host acct.example", "auth REDACTED host REDACTED"},
		{"server proxy.example y", "server proxy.example y"},
	}
	for _, tt := range tests {
		if got := r.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
