// Package xcaddy checks xcaddy.json, the manifest that tests/xcaddy/build.sh
// reads to build Caddy with this plugin through xcaddy, against go.mod and the
// source tree.
package xcaddy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	// The blank import registers the handler module, so that the test can
	// check the module ids that the manifest lists.
	_ "github.com/caddy-segment/caddy-segment/caddymodule"
)

// caddyModulePath is the module path of Caddy, whose version in go.mod the
// manifest must repeat.
const caddyModulePath = "github.com/caddyserver/caddy/v2"

// manifest is the content of xcaddy.json.
type manifest struct {
	XcaddyVersion string   `json:"xcaddy_version"`
	CaddyVersion  string   `json:"caddy_version"`
	Plugins       []plugin `json:"plugins"`
}

// plugin is one Go module that xcaddy builds into Caddy.
type plugin struct {
	Module       string   `json:"module"`
	Package      string   `json:"package"`
	Replace      string   `json:"replace"`
	CaddyModules []string `json:"caddy_modules"`
}

// goModFile is the part of `go mod edit -json` output that the test reads.
type goModFile struct {
	Module struct {
		Path string
	}
	Require []struct {
		Path    string
		Version string
	}
}

// releaseVersion matches a release tag such as v2.11.9, which is what xcaddy
// and `go install` take for a pinned build.
var releaseVersion = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+$`)

// repoRoot returns the repository root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatalf("resolving the repository root failed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("go.mod not found in %s, which should be the repository root: %v", root, err)
	}
	return root
}

// loadManifest decodes xcaddy.json and rejects fields that the build script
// does not know, so that a misspelt field fails here and not silently there.
func loadManifest(t *testing.T, root string) manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "xcaddy.json"))
	if err != nil {
		t.Fatalf("reading xcaddy.json failed: %v", err)
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	var m manifest
	if err := decoder.Decode(&m); err != nil {
		t.Fatalf("xcaddy.json is not a valid manifest: %v", err)
	}
	return m
}

// loadGoMod reads go.mod through `go mod edit -json`, which parses it the way
// the go command does and needs no network.
func loadGoMod(t *testing.T, dir string) goModFile {
	t.Helper()
	cmd := exec.Command("go", "mod", "edit", "-json")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod edit -json in %s failed: %v\n%s", dir, err, stderr.String())
	}
	var f goModFile
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("decoding the output of go mod edit -json failed: %v", err)
	}
	return f
}

func TestManifestVersions(t *testing.T) {
	root := repoRoot(t)
	m := loadManifest(t, root)
	goMod := loadGoMod(t, root)

	var caddyVersion string
	for _, r := range goMod.Require {
		if r.Path == caddyModulePath {
			caddyVersion = r.Version
		}
	}
	if caddyVersion == "" {
		t.Fatalf("go.mod has no require line for %s", caddyModulePath)
	}

	if m.CaddyVersion != caddyVersion {
		t.Errorf("xcaddy.json caddy_version is %q but go.mod requires %s %s: set caddy_version to %q", m.CaddyVersion, caddyModulePath, caddyVersion, caddyVersion)
	}
	if !releaseVersion.MatchString(m.XcaddyVersion) {
		t.Errorf("xcaddy.json xcaddy_version %q is not a release tag such as v0.4.5", m.XcaddyVersion)
	}
}

// ownPlugin returns the manifest entry for this repository's module, the one
// whose module path is go.mod's module.
func ownPlugin(t *testing.T, m manifest, modulePath string) plugin {
	t.Helper()
	for _, p := range m.Plugins {
		if p.Module == modulePath {
			return p
		}
	}
	t.Fatalf("xcaddy.json lists no plugin with module %q, the module that go.mod declares", modulePath)
	return plugin{}
}

func TestManifestPlugins(t *testing.T) {
	m := loadManifest(t, repoRoot(t))

	if len(m.Plugins) == 0 {
		t.Fatal("xcaddy.json lists no plugins: add this module")
	}
	for _, p := range m.Plugins {
		if p.Module == "" {
			t.Errorf("plugin with package %q has an empty module", p.Package)
		}
		if p.Package != p.Module && !strings.HasPrefix(p.Package, p.Module+"/") {
			t.Errorf("plugin package %q is not inside module %q", p.Package, p.Module)
		}
		if filepath.IsAbs(p.Replace) {
			t.Errorf("plugin %q: replace %q is an absolute path: give it relative to xcaddy.json so that every clone can build", p.Module, p.Replace)
		}
	}
}

func TestManifestOwnPlugin(t *testing.T) {
	root := repoRoot(t)
	goMod := loadGoMod(t, root)
	p := ownPlugin(t, loadManifest(t, root), goMod.Module.Path)

	if p.Replace == "" {
		t.Fatalf("plugin %q has no replace: set it to %q, the repository root relative to xcaddy.json, because the module is not published", p.Module, "./")
	}
	replaceDir := filepath.Join(root, filepath.FromSlash(p.Replace))
	replaceGoMod := loadGoMod(t, replaceDir)
	if replaceGoMod.Module.Path != p.Module {
		t.Errorf("plugin replace %q points to module %q, expected %q", p.Replace, replaceGoMod.Module.Path, p.Module)
	}

	packageDir := filepath.Join(replaceDir, filepath.FromSlash(strings.TrimPrefix(p.Package, p.Module)))
	info, err := os.Stat(packageDir)
	if err != nil {
		t.Fatalf("plugin package %q has no directory: %v", p.Package, err)
	}
	if !info.IsDir() {
		t.Fatalf("plugin package path %s is not a directory", packageDir)
	}
	sources, err := filepath.Glob(filepath.Join(packageDir, "*.go"))
	if err != nil {
		t.Fatalf("listing Go files in %s failed: %v", packageDir, err)
	}
	hasSource := slices.ContainsFunc(sources, func(name string) bool {
		return !strings.HasSuffix(name, "_test.go")
	})
	if !hasSource {
		t.Errorf("plugin package directory %s has no non-test Go file for xcaddy to import", packageDir)
	}

	if len(p.CaddyModules) == 0 {
		t.Errorf("plugin %q lists no caddy_modules, so the build script cannot check the binary", p.Package)
	}
	for _, id := range p.CaddyModules {
		if _, err := caddy.GetModule(id); err != nil {
			t.Errorf("plugin %q lists Caddy module %q, which the package does not register: %v", p.Package, id, err)
		}
	}
}

func TestBuildScriptExecutable(t *testing.T) {
	info, err := os.Stat("build.sh")
	if err != nil {
		t.Fatalf("build.sh not found beside the manifest test: %v", err)
	}
	if info.Mode().Perm()&0o111 == 0 {
		t.Errorf("build.sh has mode %v, expected it to be executable: run chmod +x tests/xcaddy/build.sh", info.Mode().Perm())
	}
}
