package vaultclient

import (
	"context"

	"google.golang.org/protobuf/proto"

	vaultv1 "vault-service/clients/go/vaultv1"
)

// ListAll calls handle with every result ListResults returns for filters (statuses, labels,
// update-time range and page size; its page token is ignored), page after page, in the order
// ListResults states. Each page is its own call, so ctx bounds the whole walk. A result that
// changes during the walk may be handled again later; none is skipped. It stops at the first
// error of a call or of handle and returns it.
func ListAll(ctx context.Context, client vaultv1.VaultServiceClient, filters *vaultv1.ListResultsRequest, handle func(*vaultv1.VaultingResult) error) error {
	request := proto.Clone(filters).(*vaultv1.ListResultsRequest)
	request.PageToken = ""
	for {
		page, err := client.ListResults(ctx, request)
		if err != nil {
			return err
		}
		for _, result := range page.GetResults() {
			if err := handle(result); err != nil {
				return err
			}
		}
		if page.GetNextPageToken() == "" {
			return nil
		}
		request.PageToken = page.GetNextPageToken()
	}
}
