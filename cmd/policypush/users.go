package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/policypush/policypush/admin"
	"github.com/policypush/policypush/config"
)

// Console accounts and keys: `policypush users add`, the demo accounts, the enterprise link key.

func init() { addCommand(usersCmd) }

func usersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "控制台账号"}
	var nu admin.NewUser
	var fromStdin bool
	var by string
	add := &cobra.Command{
		Use:   "add",
		Short: "Create a console account (the password is read from stdin)",
		Long: `Creates a staff account with a bcrypt-hashed password. Roles and the scope each needs:
  admin                          system administrator (accounts, tokens, audit log; no policy writing)
  author        --department D   writes and tests drafts of department D, submits them for review
  reviewer                       approves or rejects others' drafts, publishes, retires
  park_manager  --park P         sees matched firms of park P (with contact phones), exports, notes
  district      --region PREFIX  sees matched firms whose region code starts with PREFIX
  auditor                        read-only: firms (masked), dashboards, audit log

Example: printf '%s\n' "$PASSWORD" | policypush users add --username zhang --password-stdin --role park_manager --park SIP`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !fromStdin {
				return errors.New("pass the password on stdin with --password-stdin (it must not appear in the process list or shell history)")
			}
			pw, err := readPassword(cmd.InOrStdin())
			if err != nil {
				return err
			}
			nu.Password = pw
			// The first account bootstraps the deployment; later ones are created by an admin.
			return g.asActor(cmd.Context(), by, admin.PermUserAdmin, func(db *gorm.DB, actor string) error {
				u, err := admin.CreateUser(cmd.Context(), db, nu, actor)
				if err != nil {
					return err
				}
				fmt.Printf("created %s (%s)\n", u.Username, u.Role)
				return nil
			})
		},
	}
	add.Flags().StringVar(&nu.Username, "username", "", "login name (lowercase letters, digits, _ . -)")
	add.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")
	add.Flags().StringVar(&nu.Role, "role", "", "one of "+strings.Join(admin.Roles(), ", "))
	add.Flags().StringVar(&nu.ParkID, "park", "", "park id (park_manager)")
	add.Flags().StringVar(&nu.RegionPrefix, "region", "", "region code prefix, 2-6 digits (district)")
	add.Flags().StringVar(&nu.Department, "department", "", "department (author)")
	add.Flags().StringVar(&by, "by", "", "admin account creating it, once accounts exist (default the OS user)")
	_ = add.MarkFlagRequired("username")
	_ = add.MarkFlagRequired("role")
	cmd.AddCommand(add, unlockCmd(g))
	return cmd
}

// unlockCmd clears failed sign-ins so an account (or a client address) is not held any longer.
func unlockCmd(g *globals) *cobra.Command {
	var addr, by string
	cmd := &cobra.Command{
		Use:   "unlock [USERNAME]",
		Short: "Clear the failed sign-ins of an account or a client address (the wait they cause ends)",
		Long: `Failed sign-ins make an account, and the address guessing from, wait before the next try (see
console.login_max_failures, login_delay, login_max_delay). unlock clears them so the next try is
checked at once. Name the account, --addr, or both; --by names an admin once accounts exist.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user := ""
			if len(args) == 1 {
				user = args[0]
			}
			return g.asActor(cmd.Context(), by, admin.PermUserAdmin, func(db *gorm.DB, actor string) error {
				n, err := admin.UnlockLogin(cmd.Context(), db, user, addr, actor)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cleared %d failed sign-ins\n", n)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "", "client address whose failures to clear")
	cmd.Flags().StringVar(&by, "by", "", "admin account doing this (default $USER)")
	return cmd
}

// readPassword reads the first line of r.
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password on stdin")
	}
	return line, nil
}

// seedDemoAccounts creates the demo accounts (one per role) and sets their password: the given
// one, or a new random one on every start so that the printed password is always the valid one.
func seedDemoAccounts(ctx context.Context, db *gorm.DB, password string) (string, error) {
	if password == "" {
		b := make([]byte, 9)
		_, _ = rand.Read(b)
		const alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
		var sb strings.Builder
		for i, c := range b {
			if i > 0 && i%3 == 0 {
				sb.WriteByte('-')
			}
			sb.WriteByte(alphabet[int(c)%len(alphabet)])
		}
		password = sb.String()
	}
	if err := admin.SeedDemoUsers(ctx, db, password); err != nil {
		return "", err
	}
	return password, nil
}

func printDemoAccounts(w io.Writer, password string) {
	names := make([]string, len(admin.DemoUsers))
	for i, u := range admin.DemoUsers {
		names[i] = u.Username
	}
	fmt.Fprintf(w, "演示账号: %s\n演示密码: %s  （--demo-password 可指定）\n", strings.Join(names, ", "), password)
}

// linkSecret is the key of the enterprise links: console.link_secret, or one generated once and
// kept in the data dir.
func (a *app) linkSecret() ([]byte, error) {
	return admin.LoadOrCreateLinkSecret(a.cfg.Console.LinkSecret, filepath.Join(a.cfg.DataDir, "console", "link.key"))
}

// consoleOptions are the console's settings from the config.
func (a *app) consoleOptions() (admin.Options, error) {
	secret, err := a.linkSecret()
	if err != nil {
		return admin.Options{}, err
	}
	sandboxDir := ""
	if a.sandbox != nil {
		sandboxDir = filepath.Join(a.cfg.DataDir, "sandbox")
	}
	c := a.cfg.Console
	proxies, err := config.ParseTrustedProxies(c.TrustedProxies)
	if err != nil {
		return admin.Options{}, fmt.Errorf("console.trusted_proxies: %w", err)
	}
	return admin.Options{DB: a.db, Bus: a.bus, Matcher: a.matcher, SubjectPrefix: a.cfg.NATS.SubjectPrefix,
		SandboxDir: sandboxDir, Log: a.log, Location: a.cfg.Location(),
		LinkSecret: secret, LinkTTL: c.LinkTTL, SessionTTL: c.SessionTTL, SessionIdle: c.SessionIdle,
		SecureCookies: c.SecureCookies, PublicURL: a.cfg.HTTP.PublicURL, LoginMaxFailures: c.LoginMaxFailures,
		LoginWindow: c.LoginWindow, LoginDelay: c.LoginDelay, LoginMaxDelay: c.LoginMaxDelay, TrustedProxies: proxies,
		PayoutHolidays: a.cfg.Payout.Holidays, Vocabulary: a.vocabulary(), QueryTimeout: c.QueryTimeout}, nil
}
