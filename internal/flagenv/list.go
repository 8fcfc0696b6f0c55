package flagenv

import "strings"

// List is a repeatable string-list flag. On the command line each use
// adds to the list, and the first use replaces whatever the list held (its
// default or the environment's value). From the environment (Parse) the
// variable's value replaces the default, split at the list's separator.
type List struct {
	dst       *[]string
	sep       string
	splitArgs bool
	fromArgs  bool
}

// NewList returns a List writing to dst, whose current value is the
// default. sep separates the elements of an environment value (elements
// are trimmed, empty ones dropped); "" makes the whole value one element,
// for values that contain any separator themselves (a YAML node).
func NewList(dst *[]string, sep string) *List { return &List{dst: dst, sep: sep} }

// SplitArgs makes a command-line value split at the separator too, so
// "--groups a,b" is "--groups a --groups b".
func (l *List) SplitArgs() *List { l.splitArgs = true; return l }

// String implements flag.Value: the elements joined with the separator
// (a comma when there is none).
func (l *List) String() string {
	if l == nil || l.dst == nil {
		return ""
	}
	return strings.Join(*l.dst, l.join())
}

func (l *List) join() string {
	if l.sep == "" {
		return ","
	}
	return l.sep
}

// Set implements flag.Value for one command-line use.
func (l *List) Set(v string) error {
	if !l.fromArgs {
		*l.dst, l.fromArgs = nil, true
	}
	if l.splitArgs {
		*l.dst = append(*l.dst, l.split(v)...)
	} else {
		*l.dst = append(*l.dst, v)
	}
	return nil
}

// SetEnv replaces the list with the elements of an environment value.
func (l *List) SetEnv(v string) error {
	*l.dst = l.split(v)
	return nil
}

// Get implements flag.Getter.
func (l *List) Get() any { return *l.dst }

func (l *List) split(v string) []string {
	if l.sep == "" {
		if strings.TrimSpace(v) == "" {
			return nil
		}
		return []string{v}
	}
	var out []string
	for _, p := range strings.Split(v, l.sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
