package flagenv

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

// values are the flags of the test's flag set after parsing.
type values struct {
	Name    string
	On      bool
	Wait    time.Duration
	Count   int
	Items   []string // comma-separated, each command-line use one item
	Groups  []string // comma-separated, command-line values split too
	Nodes   []string // no separator: an environment value is one element
	Renamed string
}

func newSet(v *values) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&v.Name, "name", "default-name", "")
	fs.BoolVar(&v.On, "on", true, "")
	fs.DurationVar(&v.Wait, "wait", time.Second, "")
	fs.IntVar(&v.Count, "count", 3, "")
	v.Items = []string{"d1", "d2"}
	fs.Var(NewList(&v.Items, ","), "item", "")
	fs.Var(NewList(&v.Groups, ",").SplitArgs(), "groups", "")
	fs.Var(NewList(&v.Nodes, ""), "node", "")
	fs.StringVar(&v.Renamed, "renamed", "", "")
	return fs
}

var opts = Options{Prefix: "APP_", Rename: map[string]string{"renamed": "APP_OTHER_NAME"}, Known: []string{"APP_SIBLING"}}

func TestParse(t *testing.T) {
	t.Parallel()
	defaults := values{Name: "default-name", On: true, Wait: time.Second, Count: 3, Items: []string{"d1", "d2"}}
	with := func(change func(*values)) values {
		v := defaults
		change(&v)
		return v
	}
	tests := []struct {
		name      string
		args, env []string
		want      values
		fromEnv   map[string]string // nil: none
		unknown   []string
		wantErr   []string // every string must be in the error
	}{
		{name: "defaults", want: defaults},
		{name: "environment over default",
			env:     []string{"APP_NAME=from-env", "APP_ON=false", "APP_WAIT=2m", "APP_COUNT=7", "APP_OTHER_NAME=r"},
			want:    with(func(v *values) { v.Name, v.On, v.Wait, v.Count, v.Renamed = "from-env", false, 2*time.Minute, 7, "r" }),
			fromEnv: map[string]string{"name": "APP_NAME", "on": "APP_ON", "wait": "APP_WAIT", "count": "APP_COUNT", "renamed": "APP_OTHER_NAME"}},
		{name: "command line over environment",
			args: []string{"--name", "from-args", "--on=true", "--wait", "5s", "--count", "9"},
			env:  []string{"APP_NAME=from-env", "APP_ON=false", "APP_WAIT=2m", "APP_COUNT=7"},
			want: with(func(v *values) { v.Name, v.Wait, v.Count = "from-args", 5*time.Second, 9 })},
		{name: "list from environment replaces the default",
			env: []string{"APP_ITEM=a, b,,c", "APP_GROUPS=g1,g2", "APP_NODE=x: 1, y: 2\n"},
			want: with(func(v *values) {
				v.Items, v.Groups, v.Nodes = []string{"a", "b", "c"}, []string{"g1", "g2"}, []string{"x: 1, y: 2\n"}
			}),
			fromEnv: map[string]string{"item": "APP_ITEM", "groups": "APP_GROUPS", "node": "APP_NODE"}},
		{name: "list on the command line replaces environment and default",
			args: []string{"--item", "a1,still-one", "--item", "a2", "--groups", "g3, g4", "--node", "n"},
			env:  []string{"APP_ITEM=e1", "APP_GROUPS=g1", "APP_NODE=e"},
			want: with(func(v *values) {
				v.Items, v.Groups, v.Nodes = []string{"a1,still-one", "a2"}, []string{"g3", "g4"}, []string{"n"}
			})},
		{name: "list on the command line replaces the default",
			args: []string{"--item", "a"}, want: with(func(v *values) { v.Items = []string{"a"} })},
		{name: "empty list variable empties the list",
			env: []string{"APP_ITEM=", "APP_NODE= "}, want: with(func(v *values) { v.Items = nil }),
			fromEnv: map[string]string{"item": "APP_ITEM", "node": "APP_NODE"}},
		{name: "unknown variables are reported, known ones not",
			env:     []string{"APP_NAEM=typo", "APP_SIBLING=x", "OTHER_NAME=x", "APP_Z=1"},
			want:    defaults,
			unknown: []string{"APP_NAEM", "APP_Z"}},
		{name: "renamed flag's default variable name is unknown",
			env: []string{"APP_RENAMED=x"}, want: defaults, unknown: []string{"APP_RENAMED"}},
		{name: "bad boolean", env: []string{"APP_ON=yes please"},
			wantErr: []string{"APP_ON", "-on", `"yes please"`, "true or false"}},
		{name: "bad duration", env: []string{"APP_WAIT=soon"},
			wantErr: []string{"APP_WAIT", "-wait", "duration"}},
		{name: "bad number", env: []string{"APP_COUNT=many"},
			wantErr: []string{"APP_COUNT", "-count", "whole number"}},
		{name: "every bad variable is named", env: []string{"APP_COUNT=many", "APP_WAIT=soon"},
			wantErr: []string{"APP_COUNT", "APP_WAIT"}},
		{name: "a bad variable is ignored when the flag is on the command line",
			args: []string{"--on=false"}, env: []string{"APP_ON=yes please"}, want: with(func(v *values) { v.On = false })},
		{name: "bad command line", args: []string{"--count", "x"}, wantErr: []string{"-count"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got values
			res, err := Parse(newSet(&got), tc.args, tc.env, opts)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one with %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("values\n got %+v\nwant %+v", got, tc.want)
			}
			if tc.fromEnv == nil {
				tc.fromEnv = map[string]string{}
			}
			if !reflect.DeepEqual(res.FromEnv, tc.fromEnv) {
				t.Errorf("FromEnv = %v, want %v", res.FromEnv, tc.fromEnv)
			}
			if !reflect.DeepEqual(res.Unknown, tc.unknown) {
				t.Errorf("Unknown = %v, want %v", res.Unknown, tc.unknown)
			}
		})
	}
}

func TestNameAndVars(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ prefix, flag, want string }{
		{"EDGE_", "tag-ttl", "EDGE_TAG_TTL"},
		{"CONTROLPLANE_", "max-grpc-streams-per-caller", "CONTROLPLANE_MAX_GRPC_STREAMS_PER_CALLER"},
		{"EDGE_", "listen", "EDGE_LISTEN"},
	} {
		if got := Name(tc.prefix, tc.flag); got != tc.want {
			t.Errorf("Name(%q, %q) = %q, want %q", tc.prefix, tc.flag, got, tc.want)
		}
	}
	var v values
	got := opts.Vars(newSet(&v))
	want := []string{"APP_COUNT", "APP_GROUPS", "APP_ITEM", "APP_NAME", "APP_NODE", "APP_ON", "APP_OTHER_NAME", "APP_WAIT"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Vars = %v, want %v", got, want)
	}
}

func TestLogUnknown(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	LogUnknown(slog.New(slog.NewTextHandler(&buf, nil)), Result{Unknown: []string{"APP_A", "APP_B"}})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "variable=APP_A") || !strings.Contains(lines[1], "variable=APP_B") {
		t.Fatalf("want one line per variable:\n%s", buf.String())
	}
}

// TestHelpShowsDefaults: --help is flag.ErrHelp, and a List prints its
// default like any flag.
func TestHelpShowsDefaults(t *testing.T) {
	t.Parallel()
	var v values
	fs := newSet(&v)
	var out bytes.Buffer
	fs.SetOutput(&out)
	if _, err := Parse(fs, []string{"--help"}, []string{"APP_NAME=x"}, opts); err != flag.ErrHelp {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(out.String(), `(default d1,d2)`) {
		t.Fatalf("list default not shown:\n%s", out.String())
	}
}
