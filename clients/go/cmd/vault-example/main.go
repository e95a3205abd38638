// Command vault-example starts a vaulting session and waits for its result: the shortest
// complete use of vault-service from Go.
//
//	vault-example -addr 127.0.0.1:50051 -id order-42
//	vault-example -addr vault.internal:443 -ca ca.pem -cert client.pem -key client-key.pem -id order-42
//
// It prints "session_data: <data>" (hand it to Antom's front-end SDK on the buyer's page) once
// the result stream is open, then "event: <id> <status>" for the session's first event, and
// exits 0. The token, if any, comes from -token or VAULT_TOKEN.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"vault-service/clients/go/vaultclient"
	vaultv1 "vault-service/clients/go/vaultv1"
)

var errDone = errors.New("done")

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "vault-service gRPC address")
	id := flag.String("id", "", "vaulting_request_id (required)")
	token := flag.String("token", os.Getenv("VAULT_TOKEN"), "bearer token (default $VAULT_TOKEN)")
	caFile := flag.String("ca", "", "PEM CA of the server's certificate: turns TLS on")
	certFile := flag.String("cert", "", "PEM client certificate, for mTLS (with -key)")
	keyFile := flag.String("key", "", "PEM client private key, for mTLS (with -cert)")
	wait := flag.Duration("wait", 10*time.Minute, "how long to wait for the result")
	flag.Parse()
	if *id == "" {
		fail(errors.New("-id is required"))
	}

	options := []grpc.DialOption{}
	if *caFile != "" {
		config, err := tlsConfig(*caFile, *certFile, *keyFile)
		if err != nil {
			fail(err)
		}
		options = append(options, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	} else {
		// grpc.WithInsecure is deprecated in newer gRPC but is what gRPC 1.33 (Debian 12) has.
		options = append(options, grpc.WithInsecure()) //nolint:staticcheck
	}
	if *token != "" {
		options = append(options, grpc.WithPerRPCCredentials(vaultclient.BearerToken(*token, *caFile == "")))
	}
	conn, err := grpc.Dial(*addr, options...)
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	client := vaultv1.NewVaultServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	createCtx, createCancel := context.WithTimeout(ctx, 30*time.Second)
	session, err := client.CreateSession(createCtx, &vaultv1.CreateSessionRequest{VaultingRequestId: *id})
	createCancel()
	if err != nil {
		fail(err)
	}

	var opened sync.Once
	err = vaultclient.Follow(ctx, client, vaultclient.FollowOptions{
		VaultingRequestIDs: []string{*id},
		OnOpen: func() {
			opened.Do(func() { fmt.Printf("session_data: %s\n", session.GetSessionData()) })
		},
		// An event the service cannot read still means the result changed: read it directly.
		OnUnreadable: func(event *vaultv1.UnreadableEvent) error {
			getCtx, getCancel := context.WithTimeout(ctx, 10*time.Second)
			defer getCancel()
			response, err := client.GetResult(getCtx, &vaultv1.GetResultRequest{VaultingRequestId: event.GetVaultingRequestId()})
			if err != nil {
				return err
			}
			return printResult(response.GetResult())
		},
	}, func(event *vaultv1.ResultEvent) error { return printResult(event.GetResult()) })
	if err != errDone {
		fail(err)
	}
}

// printResult prints the session's first result and ends the follow.
func printResult(result *vaultv1.VaultingResult) error {
	fmt.Printf("event: %s %s\n", result.GetVaultingRequestId(), result.GetStatus())
	return errDone
}

func tlsConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	ca, err := ioutil.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	config := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

func fail(err error) {
	details := vaultclient.DetailsOf(err)
	fmt.Fprintf(os.Stderr, "vault-example: %v\n", err)
	for _, violation := range details.FieldViolations {
		fmt.Fprintf(os.Stderr, "  field %s: %s\n", violation.GetField(), violation.GetDescription())
	}
	if reason := details.AntomReason(); reason != "" {
		fmt.Fprintf(os.Stderr, "  Antom: %s\n", reason)
	}
	if details.RetryDelay > 0 {
		fmt.Fprintf(os.Stderr, "  retry after %s\n", details.RetryDelay)
	}
	os.Exit(1)
}
