package oci

import "regexp"

// Grammar from the OCI Distribution Spec ("Pulling manifests").
var (
	repositoryRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE        = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// MaxRepositoryLength bounds a repository name; distribution uses 255 for
// the whole name, which keeps storage keys well under S3's 1024-byte limit.
const MaxRepositoryLength = 255

// ValidRepository reports whether name matches the spec's repository grammar.
func ValidRepository(name string) bool {
	return len(name) <= MaxRepositoryLength && repositoryRE.MatchString(name)
}

// ValidTag reports whether tag matches the spec's tag grammar.
func ValidTag(tag string) bool { return tagRE.MatchString(tag) }
