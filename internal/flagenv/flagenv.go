// Package flagenv gives every flag of a flag.FlagSet an environment
// variable, the same way for every binary of the project (the edge's
// EDGE_<FLAG>, the control plane's CONTROLPLANE_<FLAG>):
//
//   - The variable of flag --some-name is PREFIX + SOME_NAME (upper case,
//     '-' as '_'), unless Options.Rename says otherwise.
//   - Precedence: command line, then environment, then the flag's default.
//   - A list flag (List) set from the environment takes the variable's
//     value instead of its default, split at the list's separator; used on
//     the command line it replaces the environment's value.
//   - A value the flag refuses (a bad boolean, duration or number) is an
//     error naming the variable and the flag, never ignored.
//   - Variables under the prefix that name no flag are returned in
//     Result.Unknown for one warning line each (LogUnknown), not refused:
//     such a variable is most often one of another release (a rolled-back
//     binary under an unchanged pod spec) or of a sibling subcommand, and
//     refusing to start would turn that harmless leftover into an outage,
//     while the warning still shows a misspelt name.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Name is the environment variable of flag name under prefix:
// Name("EDGE_", "tag-ttl") is "EDGE_TAG_TTL".
func Name(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Options say how a flag set's flags map to environment variables.
type Options struct {
	// Prefix starts every variable, e.g. "EDGE_".
	Prefix string
	// Rename maps a flag name to a variable other than Name(Prefix, flag).
	Rename map[string]string
	// Known are further variables under Prefix that belong to a sibling
	// command sharing the environment: they are not reported as unknown.
	Known []string
}

// Var is the variable of flag name under o.
func (o Options) Var(flagName string) string {
	if v, ok := o.Rename[flagName]; ok {
		return v
	}
	return Name(o.Prefix, flagName)
}

// Vars are the variables of every flag of fs under o, sorted.
func (o Options) Vars(fs *flag.FlagSet) []string {
	var vars []string
	fs.VisitAll(func(f *flag.Flag) { vars = append(vars, o.Var(f.Name)) })
	slices.Sort(vars)
	return vars
}

// Result is what Parse found in the environment.
type Result struct {
	// FromEnv maps each flag that took its value from the environment to
	// its variable.
	FromEnv map[string]string
	// Unknown are the variables under the prefix that name no flag, sorted.
	Unknown []string
}

// envSetter is a flag.Value that takes an environment value differently
// from a command-line one (List).
type envSetter interface{ SetEnv(v string) error }

// Parse parses args into fs, then gives every flag that args did not set
// the value of its variable in environ ("KEY=VALUE" entries, as
// os.Environ returns them), if that is set. Errors are fs.Parse's
// (flag.ErrHelp for -h) or name the variable and the flag.
func Parse(fs *flag.FlagSet, args, environ []string, o Options) (Result, error) {
	res := Result{FromEnv: map[string]string{}}
	if err := fs.Parse(args); err != nil {
		return res, err
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, o.Prefix) {
			env[k] = v
		}
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	known := map[string]bool{}
	for _, k := range o.Known {
		known[k] = true
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := o.Var(f.Name)
		known[name] = true
		v, ok := env[name]
		if !ok || onCommandLine[f.Name] {
			return
		}
		if err := setFromEnv(f, v); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s (flag -%s): %w", name, f.Name, err))
			return
		}
		res.FromEnv[f.Name] = name
	})
	for k := range env {
		if !known[k] {
			res.Unknown = append(res.Unknown, k)
		}
	}
	slices.Sort(res.Unknown)
	return res, errors.Join(errs...)
}

// setFromEnv sets f from an environment value. A typed flag's error says
// what it wants and shows the value (a boolean, number or duration is no
// secret); any other flag's error is its own, without the value.
func setFromEnv(f *flag.Flag, v string) error {
	if s, ok := f.Value.(envSetter); ok {
		return s.SetEnv(v)
	}
	err := f.Value.Set(v)
	if err == nil {
		return nil
	}
	getter, ok := f.Value.(flag.Getter)
	if !ok {
		return err
	}
	switch getter.Get().(type) {
	case bool:
		return fmt.Errorf("%q: want true or false", v)
	case time.Duration:
		return fmt.Errorf("%q: want a duration such as 30s or 5m", v)
	case int, int64, uint, uint64:
		return fmt.Errorf("%q: want a whole number", v)
	case float64:
		return fmt.Errorf("%q: want a number", v)
	}
	return err
}

// LogUnknown writes one warning line per unknown variable of r.
func LogUnknown(log *slog.Logger, r Result) {
	for _, k := range r.Unknown {
		log.Warn("environment variable names no flag; ignored", "variable", k)
	}
}
