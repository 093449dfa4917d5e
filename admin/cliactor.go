package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// ErrNoSuchActor is returned when the CLI's --by does not name an account that may do the step.
var ErrNoSuchActor = errors.New("not allowed")

// CLIActor checks who a CLI command runs as (its --by). While the deployment has no staff account
// (the embedded single-operator default) any name is taken as given, and operator is true so the
// caller can say so. Once an account exists, name must be one with permission need: the CLI
// answers to the same people as the console, and the audit log never records an invented name.
func CLIActor(ctx context.Context, db *gorm.DB, name string, need Perm) (actor string, operator bool, err error) {
	name = strings.TrimSpace(name)
	n, err := store.CountUsers(ctx, db, "")
	if err != nil {
		return "", false, err
	}
	if n == 0 {
		if name == "" {
			return "", false, fmt.Errorf("say who you are with --by NAME: %w", ErrNoSuchActor)
		}
		return name, true, nil
	}
	u, err := store.UserByName(ctx, db, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "", false, fmt.Errorf("--by %q is not a staff account of this deployment; name an account with permission %s (%s): %w",
				name, need, strings.Join(rolesWith(need), ", "), ErrNoSuchActor)
		}
		return "", false, err
	}
	if !slices.Contains(rolePerms[u.Role], need) {
		return "", false, fmt.Errorf("%s has role %s, which lacks permission %s (roles that have it: %s): %w",
			u.Username, u.Role, need, strings.Join(rolesWith(need), ", "), ErrNoSuchActor)
	}
	return u.Username, false, nil
}

// rolesWith lists the roles holding a permission.
func rolesWith(p Perm) []string {
	var out []string
	for _, r := range Roles() {
		if slices.Contains(rolePerms[r], p) {
			out = append(out, r)
		}
	}
	return out
}
