package admin

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// gormUse is a method of *gorm.DB used in admin's source.
type gormUse struct {
	pos    token.Position
	method string
}

// allowedGorm are the methods of *gorm.DB admin may use: WithContext attaches the request's
// deadline to the handle it passes to core/audit.Write. Everything else — building a query,
// running it, opening a transaction — is a store function's job (store/console_*.go).
var allowedGorm = map[string]bool{"WithContext": true}

// exportData maps the import paths of admin and its dependencies to their compiled export data
// (go list -export), which the type checker reads.
func exportData(t *testing.T) map[string]string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to read the export data of admin's imports: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -export: %v", err)
	}
	exports := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if path, file, ok := strings.Cut(sc.Text(), "\t"); ok && file != "" {
			exports[path] = file
		}
	}
	return exports
}

// gormUses type-checks admin's non-test files (plus extra files, name → source) against the
// export data of its imports and lists every method of gorm.DB they call or take the value of,
// on any expression of that type however it was reached.
func gormUses(t *testing.T, exports map[string]string, extra map[string]string) []gormUse {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	for name, src := range extra {
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	conf := types.Config{Importer: importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		return os.Open(exports[path])
	})}
	info := &types.Info{Selections: map[*ast.SelectorExpr]*types.Selection{}}
	if _, err := conf.Check("github.com/policypush/policypush/admin", fset, files, info); err != nil {
		t.Fatalf("type-check admin: %v", err)
	}
	var uses []gormUse
	for sel, s := range info.Selections {
		if s.Kind() != types.MethodVal || allowedGorm[s.Obj().Name()] {
			continue
		}
		recv := s.Recv()
		if p, ok := recv.(*types.Pointer); ok {
			recv = p.Elem()
		}
		if n, ok := recv.(*types.Named); ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "gorm.io/gorm" && n.Obj().Name() == "DB" {
			uses = append(uses, gormUse{fset.Position(sel.Sel.Pos()), s.Obj().Name()})
		}
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].pos.String() < uses[j].pos.String() })
	return uses
}

// TestAdminRunsNoQueries keeps the console's SQL in one place: admin's handlers parse, authorize
// and render, and call store functions (store/console_*.go) with the *gorm.DB they hold; they
// build no query, run none and open no transaction themselves. A method of *gorm.DB other than
// WithContext anywhere in admin's non-test files fails the test.
func TestAdminRunsNoQueries(t *testing.T) {
	t.Parallel()
	exports := exportData(t)
	for _, u := range gormUses(t, exports, nil) {
		t.Errorf("%s: (*gorm.DB).%s in admin: move the query into a store function (store/console_*.go)", u.pos, u.method)
	}
	// The check sees a query put back, however the handle was reached.
	back := `package admin

import (
	"context"

	"gorm.io/gorm"
)

func (s *Server) putBack(ctx context.Context) (int64, error) {
	var n int64
	err := s.opts.DB.WithContext(ctx).Table("matches").Where("state = ?", "active").Count(&n).Error
	tx := func(db *gorm.DB) error { return db.Transaction(func(*gorm.DB) error { return nil }) }
	if err != nil {
		return 0, err
	}
	return n, tx(s.core.DB())
}
`
	var got []string
	for _, u := range gormUses(t, exports, map[string]string{"put_back.go": back}) {
		if u.pos.Filename == "put_back.go" {
			got = append(got, u.method)
		}
	}
	sort.Strings(got)
	if want := []string{"Count", "Table", "Transaction", "Where"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("a query put back into admin was seen as %v, want %v", got, want)
	}
}
