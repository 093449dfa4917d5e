// Command policypush is the 免申即享 engine: one binary whose subcommands import the registry,
// apply policies, match, deliver notices and serve the console.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
	_ "time/tzdata" // air-gapped hosts may lack a zoneinfo database

	"github.com/spf13/cobra"

	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/rules"
)

// globals are the persistent flags.
type globals struct {
	configPath string
	dataDir    string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := rootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "错误:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "policypush",
		Short: "policypush — 免申即享政策匹配与推送引擎",
		Long: `policypush evaluates every active policy against the enterprise registry, records who
qualifies and for how much, and pushes each new match over NATS JetStream to WeChat and SMS.

Run "policypush demo" to see the whole flow on the embedded default (SQLite, embedded NATS,
local WeChat/SMS sandbox servers).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Every command sees the same rule vocabulary: the catalog plus config fields.extra.
		PersistentPreRunE: func(*cobra.Command, []string) error { return g.declareFields() },
	}
	root.PersistentFlags().StringVar(&g.configPath, "config", "", "config file (default: ./config.yaml when present; env POLICYPUSH_CONFIG)")
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", "", "directory for all embedded state: SQLite file, JetStream store, sandbox records (default ./data)")
	root.AddCommand(demoCmd(g), serveCmd(g), importCmd(g), policyCmd(g), matchCmd(g), matchesCmd(g),
		deliverCmd(g), statusCmd(g), fieldsCmd(g))
	for _, c := range extraCommands {
		root.AddCommand(c(g))
	}
	for _, s := range extraSubcommands {
		parent, _, err := root.Find([]string{s.parent})
		if err != nil || parent == root {
			parent = &cobra.Command{Use: s.parent}
			root.AddCommand(parent)
		}
		parent.AddCommand(s.make(g))
	}
	return root
}

// extraCommands are subcommands defined in their own files (one file per area), added with
// addCommand from an init function.
//
// Every command constructor opens the same way on purpose: its flag variables, then one
// cobra.Command literal with Use, Short, Long and Args, then a RunE that opens what it needs through
// withDB, withOps, withPayout, asActor or asFirmReader. The literals look alike but hold each
// command's own help text and flags; building them through a shared constructor would only hide
// the help away from the code it describes.
var extraCommands []func(*globals) *cobra.Command

func addCommand(c func(*globals) *cobra.Command) { extraCommands = append(extraCommands, c) }

// extraSubcommands go under a command another file defines (bench match under bench), added with
// addSubcommand from an init function.
var extraSubcommands []struct {
	parent string
	make   func(*globals) *cobra.Command
}

func addSubcommand(parent string, c func(*globals) *cobra.Command) {
	extraSubcommands = append(extraSubcommands, struct {
		parent string
		make   func(*globals) *cobra.Command
	}{parent, c})
}

// load reads the configuration with the global flags applied.
func (g *globals) load() (config.Config, error) {
	path := g.configPath
	if path == "" {
		path = os.Getenv("POLICYPUSH_CONFIG")
	}
	if path == "" {
		if _, err := os.Stat("config.yaml"); err == nil {
			path = "config.yaml"
		}
	}
	cfg, err := config.Load(path)
	if err != nil {
		return cfg, err
	}
	if g.dataDir != "" {
		cfg.DataDir = g.dataDir
	}
	return cfg, nil
}

// parseAsOf reads --as-of; empty means today in the configured time zone.
func parseAsOf(s string, cfg config.Config) (time.Time, error) {
	if s == "" {
		return rules.Day(time.Now(), cfg.Location()), nil
	}
	d, err := rules.ParseDate(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--as-of: %w", err)
	}
	return d.Time, nil
}

// waitForSignal blocks until SIGINT/SIGTERM (the command's context) ends.
func waitForSignal(ctx context.Context) {
	<-ctx.Done()
}

var errSilent = errors.New("")
