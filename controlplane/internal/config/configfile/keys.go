package configfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
)

// checkKeys reports every key of the YAML document that is not exactly a
// field of target's type, with its path ("namespaces.team-a.edgeTokn").
// encoding/json's DisallowUnknownFields is not enough: it matches field
// names case-insensitively, so "tagTtl" would silently count as "tagTTL",
// and it names only the first unknown key, without a path.
func checkKeys(data []byte, target any) error {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil // the decoder reports syntax errors
	}
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil
	}
	var errs []error
	walkKeys(doc, reflect.TypeOf(target), "", &errs)
	return errors.Join(errs...)
}

func walkKeys(v any, t reflect.Type, path string, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return // a type error, which the decoder reports
		}
		fields := map[string]reflect.Type{}
		for f := range t.Fields() {
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			ft, ok := fields[key]
			if !ok {
				*errs = append(*errs, config.Invalidf("%s: unknown field%s", join(path, key), suggest(key, fields)))
				continue
			}
			walkKeys(obj[key], ft, join(path, key), errs)
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			walkKeys(obj[key], t.Elem(), join(path, key), errs)
		}
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			return
		}
		for i, e := range list {
			walkKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest names the field that key probably meant.
func suggest(key string, fields map[string]reflect.Type) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
	}
	return fmt.Sprintf(" (known: %s)", strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
}
