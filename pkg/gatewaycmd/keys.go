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
	}, &cobra.Command{
		Use:   "rotate",
		Short: "Make a new signing key active; the old one keeps verifying until its tokens expire",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.RotateKeys(ctx, &adminpb.RotateKeysRequest{})
				if err != nil {
					return err
				}
				return printResult(g.stdout, g.output,
					fmt.Sprintf("New active signing key %s. Tokens minted from now on use it; the previous key verifies until the tokens it signed expire.", resp.GetKid()),
					struct {
						KID string `json:"kid"`
					}{resp.GetKid()})
			})
		},
	})
	return cmd
}
