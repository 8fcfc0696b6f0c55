package imagebuild

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// versionVar is the variable each main package may declare for its
// version (the edge's does; the linker ignores -X for a main package that
// does not declare it).
const versionVar = "main.buildVersion"

// goArgs are the go build arguments of a reproducible static binary:
// -trimpath drops the build machine's paths, -buildvcs=false the VCS stamp
// (the revision is in the image's labels instead; a stamp would also change
// with every uncommitted edit), -buildid= the build ID, -s -w the symbol
// table and DWARF.
func goArgs(out, pkg, version string) []string {
	return []string{"build", "-trimpath", "-buildvcs=false",
		"-ldflags", fmt.Sprintf("-s -w -buildid= -X %s=%s", versionVar, version),
		"-o", out, pkg}
}

// goEnv is the environment of go build: the caller's, with everything that
// decides the output bytes pinned. GOFLAGS is cleared so that a developer's
// setting cannot change the binary; GOAMD64/GOARM64 are the baseline
// levels so the images run on every CPU of their architecture.
func goEnv(p v1.Platform) []string {
	pinned := map[string]string{
		"CGO_ENABLED": "0", "GOOS": p.OS, "GOARCH": p.Architecture,
		"GOFLAGS": "", "GOAMD64": "v1", "GOARM64": "v8.0", "GOEXPERIMENT": "",
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := pinned[k]; !ok {
			env = append(env, kv)
		}
	}
	for k, v := range pinned {
		env = append(env, k+"="+v)
	}
	return env
}

// goBuild compiles target for platform p into dir and returns the binary's
// path, after checking that it is a static ELF of the right machine.
func goBuild(ctx context.Context, goCmd, repoRoot, dir string, t Target, p v1.Platform, version string) (string, error) {
	out := filepath.Join(dir, t.Name+"-"+p.OS+"-"+p.Architecture)
	cmd := exec.CommandContext(ctx, goCmd, goArgs(out, t.Package, version)...)
	cmd.Dir = repoRoot
	cmd.Env = goEnv(p)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s for %s: %w\n%s", t.Package, platformString(p), err, stderr.String())
	}
	if err := CheckStaticELF(out, p.Architecture); err != nil {
		return "", err
	}
	return out, nil
}

// elfMachine is the ELF machine of GOARCH arch's binaries.
func elfMachine(arch string) (elf.Machine, bool) {
	switch arch {
	case "amd64":
		return elf.EM_X86_64, true
	case "arm64":
		return elf.EM_AARCH64, true
	}
	return 0, false
}

// CheckStaticELF fails unless path is an ELF executable for arch with no
// program interpreter (PT_INTERP), i.e. one that needs no dynamic loader
// or libc in the image.
func CheckStaticELF(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("check static binary %s: %w", path, err)
	}
	defer func() { _ = f.Close() }() // read-only
	if want, ok := elfMachine(arch); !ok || f.Machine != want {
		return fmt.Errorf("check static binary %s: machine %s, want one for %s", path, f.Machine, arch)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("check static binary %s: has a program interpreter (dynamically linked)", path)
		}
	}
	return nil
}

func platformString(p v1.Platform) string { return p.OS + "/" + p.Architecture }
