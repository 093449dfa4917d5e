package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/policypush/policypush/store"
)

// TestUsersAdd: operators create console accounts from the CLI, the password only on stdin, the
// scope the role needs enforced.
func TestUsersAdd(t *testing.T) {
	c := newCLI(t)
	add := func(stdin string, args ...string) (string, error) {
		cmd := c.command(append([]string{"users", "add"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	// The first account bootstraps the deployment; later ones name an admin with --by.
	if out, err := add("a-long-password-1\n", "--username", "root", "--password-stdin", "--role", "admin"); err != nil {
		t.Fatalf("users add the first admin: %v\n%s", err, out)
	}
	for _, by := range [][]string{nil, {"--by", "ghost"}} {
		out, err := add("a-long-password-1\n", append([]string{"--username", "eve", "--password-stdin", "--role", "admin"}, by...)...)
		if err == nil || !strings.Contains(out, "--by") {
			t.Fatalf("users add %v once an account exists: %v\n%s", by, err, out)
		}
	}
	out, err := add("a-long-password-1\n", "--username", "zhang", "--password-stdin", "--role", "park_manager", "--park", "SIP", "--by", "root")
	if err != nil || !strings.Contains(out, "created zhang") {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	var u store.User
	if err := c.db.DB.Where("username = ?", "zhang").Take(&u).Error; err != nil {
		t.Fatal(err)
	}
	if u.Role != store.RolePark || u.ParkID != "SIP" || bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte("a-long-password-1")) != nil {
		t.Fatalf("stored account: %+v", u)
	}
	for _, bad := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"a-long-password-1\n", []string{"--username", "li", "--password-stdin", "--role", "park_manager"}, "--park"},
		{"a-long-password-1\n", []string{"--username", "li", "--role", "auditor"}, "--password-stdin"},
		{"short\n", []string{"--username", "li", "--password-stdin", "--role", "auditor"}, "密码至少"},
		{"a-long-password-1\n", []string{"--username", "zhang", "--password-stdin", "--role", "auditor"}, "已存在"},
		{"a-long-password-1\n", []string{"--username", "wang", "--password-stdin", "--role", "district", "--region", "32AB"}, "--region"},
	} {
		out, err := add(bad.stdin, append(bad.args, "--by", "root")...)
		if err == nil || !strings.Contains(out, bad.want) {
			t.Errorf("users add %v: err=%v, want a message about %s:\n%s", bad.args, err, bad.want, out)
		}
	}
}
