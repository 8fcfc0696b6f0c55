package configfile

import (
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
)

// storageSpec is the storage: section of the YAML file: the shared S3
// bucket edges started with --storage=control-plane cache in.
type storageSpec struct {
	S3 *s3Spec `json:"s3"`
}

// s3Spec is storage.s3. The credentials come from files only (mounted from
// a Secret by the Helm chart), so the YAML file itself holds none; without
// them the edges use their own AWS credential chain.
type s3Spec struct {
	Bucket              string `json:"bucket"`
	Prefix              string `json:"prefix"`
	Region              string `json:"region"`
	Endpoint            string `json:"endpoint"`
	PathStyle           bool   `json:"pathStyle"`
	AccessKeyIDFile     string `json:"accessKeyIdFile"`
	SecretAccessKeyFile string `json:"secretAccessKeyFile"`
}

// parseStorage converts and checks the storage: section; bad reports each
// problem, naming the field and the file, never a credential.
func parseStorage(spec *storageSpec, dir string, bad func(string, ...any)) *config.Storage {
	if spec == nil {
		return nil
	}
	if spec.S3 == nil {
		bad("storage.s3: required in a storage: section (the only storage kind)")
		return nil
	}
	s := spec.S3
	st := &config.Storage{Bucket: s.Bucket, Prefix: s.Prefix, Region: s.Region, Endpoint: s.Endpoint, PathStyle: s.PathStyle}
	ok := true
	read := func(field, file string) config.Secret {
		if file == "" {
			return ""
		}
		v, err := inlineOrFile("", file, dir)
		switch {
		case err != nil:
			bad("storage.s3.%s: %v", field, err)
			ok = false
		case v == "":
			bad("storage.s3.%s: %s is empty", field, file)
			ok = false
		}
		return config.Secret(v)
	}
	st.AccessKeyID = read("accessKeyIdFile", s.AccessKeyIDFile)
	st.SecretAccessKey = read("secretAccessKeyFile", s.SecretAccessKeyFile)
	if (s.AccessKeyIDFile == "") != (s.SecretAccessKeyFile == "") {
		bad("storage.s3: accessKeyIdFile and secretAccessKeyFile go together (both, or neither for the edges' own AWS credentials)")
		return nil
	}
	if !ok {
		return nil
	}
	if err := configspec.ValidateStorage("storage", st.Proto()); err != nil {
		bad("%v", config.Invalid(err))
		return nil
	}
	return st
}
