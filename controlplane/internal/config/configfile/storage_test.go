package configfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
)

const (
	s3KeyID  = "AKIDSTORAGETEST"
	s3Secret = "s3-secret-access-key-value"
)

// storageDir writes the S3 credential files and returns their directory.
func storageDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, v := range map[string]string{"key-id": s3KeyID + "\n", "secret": s3Secret + "\n", "empty": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadStorage(t *testing.T) {
	t.Parallel()
	dir := storageDir(t)
	cfg := "adminTokens: [\"" + adminTok + "\"]\nstorage:\n  s3:\n    bucket: edge-cache\n    prefix: shared\n    region: eu-west-1\n" +
		"    endpoint: http://127.0.0.1:7070\n    pathStyle: true\n" +
		"    accessKeyIdFile: " + filepath.Join(dir, "key-id") + "\n    secretAccessKeyFile: " + filepath.Join(dir, "secret") + "\n"
	for _, inCluster := range []bool{false, true} {
		var opts []Option
		if inCluster {
			opts = append(opts, InCluster(), WithStateStore(newMemState("")))
		}
		st, err := New(writeConfig(t, cfg), "", discard(), opts...).Load(t.Context())
		if err != nil {
			t.Fatalf("inCluster=%v: Load: %v", inCluster, err)
		}
		want := config.Storage{Bucket: "edge-cache", Prefix: "shared", Region: "eu-west-1", Endpoint: "http://127.0.0.1:7070",
			PathStyle: true, AccessKeyID: s3KeyID, SecretAccessKey: s3Secret}
		if st.Storage == nil || *st.Storage != want {
			t.Fatalf("inCluster=%v: Storage = %+v, want %+v", inCluster, st.Storage, want)
		}
	}

	// Without credential files the edges use their own chain.
	st, err := New(writeConfig(t, "adminTokens: [\""+adminTok+"\"]\nstorage: {s3: {bucket: edge-cache}}\n"), "", discard()).Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Storage == nil || st.Storage.AccessKeyID != "" || st.Storage.SecretAccessKey != "" {
		t.Fatalf("Storage = %+v, want no credentials", st.Storage)
	}
	// Without a storage: section there is none.
	st, err = New(writeConfig(t, "adminTokens: [\""+adminTok+"\"]\n"), "", discard()).Load(t.Context())
	if err != nil || st.Storage != nil {
		t.Fatalf("Storage = %+v, err %v; want nil", st.Storage, err)
	}
}

func TestLoadRefusesBadStorage(t *testing.T) {
	t.Parallel()
	dir := storageDir(t)
	head := "adminTokens: [\"" + adminTok + "\"]\nstorage:\n"
	keys := "    accessKeyIdFile: " + filepath.Join(dir, "key-id") + "\n    secretAccessKeyFile: " + filepath.Join(dir, "secret") + "\n"
	tests := []struct {
		name, config, want string
	}{
		{"unknown key", head + "  s3: {bucket: edge-cache, pathstyle: true}\n", `storage.s3.pathstyle: unknown field (did you mean "pathStyle"?)`},
		{"inline secret refused", head + "  s3: {bucket: edge-cache, secretAccessKey: x}\n", "storage.s3.secretAccessKey: unknown field"},
		{"no s3", head + "  {}\n", "storage.s3: required"},
		{"bad bucket", head + "  s3:\n    bucket: Edge_Cache\n" + keys, "storage.s3.bucket"},
		{"bad endpoint", head + "  s3:\n    bucket: edge-cache\n    endpoint: http://u:p@s3:9000\n" + keys, "storage.s3.endpoint"},
		{"endpoint path", head + "  s3:\n    bucket: edge-cache\n    endpoint: http://s3:9000/x\n" + keys, "storage.s3.endpoint"},
		{"prefix slash", head + "  s3:\n    bucket: edge-cache\n    prefix: /x\n" + keys, "storage.s3.prefix"},
		{"one key file", head + "  s3:\n    bucket: edge-cache\n    accessKeyIdFile: " + filepath.Join(dir, "key-id") + "\n", "accessKeyIdFile and secretAccessKeyFile go together"},
		{"missing file", head + "  s3:\n    bucket: edge-cache\n    accessKeyIdFile: /nonexistent/id\n    secretAccessKeyFile: " + filepath.Join(dir, "secret") + "\n", "storage.s3.accessKeyIdFile"},
		{"empty file", head + "  s3:\n    bucket: edge-cache\n    accessKeyIdFile: " + filepath.Join(dir, "key-id") + "\n    secretAccessKeyFile: " + filepath.Join(dir, "empty") + "\n", "storage.s3.secretAccessKeyFile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(writeConfig(t, tc.config), "", discard()).Load(t.Context())
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("err = %v, want config.ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %q:\n%v", tc.want, err)
			}
			for _, s := range []string{s3KeyID, s3Secret} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error leaks a credential:\n%v", err)
				}
			}
		})
	}
}
