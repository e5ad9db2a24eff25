package gatewaycmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
)

// newKeysCommand is `gateway keys ...`: the token signing keys of a
// running gateway.
func newKeysCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "List and rotate the gateway's token signing keys",
		Args:  cobra.ArbitraryArgs,
		RunE:  unknownSubcommand,
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the signing keys: the active one and those that still verify live tokens",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.ListKeys(ctx, &adminpb.ListKeysRequest{})
				if err != nil {
					return err
				}
				return printKeys(g.stdout, g.output, resp.GetKeys(), time.Now())
			})
		},
	}, newKeysRotateCommand(g))
	return cmd
}

func newKeysRotateCommand(g *globals) *cobra.Command {
	var now bool
	cmd := &cobra.Command{
		Use:   "rotate [--now]",
		Short: "Publish a new signing key; it signs once verifiers that cache the JWKS have it",
		Long: `Publish a new signing key. It appears in /jwks.json at once, and in every
token directory's jwks.json and every session with the fresh token each
running sandbox gets at the next sweep, but it signs nothing until
the gateway's --key-publish-delay has passed (at least the --jwks-max-age
that /jwks.json is served with): a verifier that caches the JWKS, as
third-party JWT libraries do, has the key before the first token it signs.
The gateway then activates it by itself; the previous key verifies until
the tokens it signed expire. One rotation waits at a time.

--now activates the key at once (the one waiting, if any). WARNING: a
verifier holding a cached JWKS then refuses every new token until it
refetches the JWKS (up to the max-age, or its own cache lifetime); use it
when the current key must stop signing now (a suspected leak).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.RotateKeys(ctx, &adminpb.RotateKeysRequest{Now: now})
				if err != nil {
					return err
				}
				out := struct {
					KID         string     `json:"kid"`
					Active      bool       `json:"active"`
					ActivatesAt *time.Time `json:"activates_at"`
				}{resp.GetKid(), resp.GetActive(), utcTime(resp.GetActivatesAt().AsTime(), resp.GetActivatesAt() != nil)}
				msg := fmt.Sprintf("New active signing key %s. Tokens minted from now on use it; the previous key verifies until the tokens it signed expire. "+
					"Verifiers with a cached JWKS refuse the new tokens until they refetch it.", resp.GetKid())
				if !resp.GetActive() {
					at := resp.GetActivatesAt().AsTime()
					msg = fmt.Sprintf("Published signing key %s. It becomes active at %s (in %s), once verifiers that cache /jwks.json have it; "+
						"until then the current key signs. `gateway keys rotate --now` activates it at once.",
						resp.GetKid(), stamp(at), time.Until(at).Round(time.Second))
				}
				return printResult(g.stdout, g.output, msg, out)
			})
		},
	}
	cmd.Flags().BoolVar(&now, "now", false, "activate the key at once; verifiers with a cached JWKS refuse new tokens until they refetch it")
	return cmd
}
