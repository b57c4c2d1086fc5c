// The Go peer of torii's black-box tests (tests/blackbox), built offline
// from Debian's grpc-go and x/net (scripts/test.sh):
//
//	peer server [-cert C -key K [-client-ca CA]]   grpc-go server, prints "peer listening address=IP:PORT"
//	peer bytes-server                              x/net/http2 h2c server: GET /bytes?n=N
//	peer client -target IP:PORT [-ca CA [-cert C -key K] [-server-name N]] [-cases a,b]
//	                                               runs the interop cases, one "CASE name PASS|FAIL why" line each
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "peer:", err)
	os.Exit(2)
}

func certPool(path string) *x509.CertPool {
	pem, err := ioutil.ReadFile(path)
	if err != nil {
		fail(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fail(fmt.Errorf("%s: no certificate", path))
	}
	return pool
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: peer server|bytes-server|client ..."))
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	cert := flags.String("cert", "", "certificate (PEM)")
	key := flags.String("key", "", "key (PEM)")
	ca := flags.String("ca", "", "client: CA of the server")
	clientCA := flags.String("client-ca", "", "server: require client certificates from this CA")
	target := flags.String("target", "", "client: IP:PORT")
	serverName := flags.String("server-name", "localhost", "client: TLS name")
	caseList := flags.String("cases", "", "client: comma-separated cases (default all)")
	_ = flags.Parse(os.Args[2:])

	switch os.Args[1] {
	case "server":
		var opts []grpc.ServerOption
		if *cert != "" {
			pair, err := tls.LoadX509KeyPair(*cert, *key)
			if err != nil {
				fail(err)
			}
			cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
			if *clientCA != "" {
				cfg.ClientCAs = certPool(*clientCA)
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
			}
			opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
		}
		fail(serveGrpc(opts))
	case "bytes-server":
		fail(serveBytes())
	case "client":
		dial := []grpc.DialOption{grpc.WithBlock()}
		if *ca != "" {
			cfg := &tls.Config{RootCAs: certPool(*ca), ServerName: *serverName}
			if *cert != "" {
				pair, err := tls.LoadX509KeyPair(*cert, *key)
				if err != nil {
					fail(err)
				}
				cfg.Certificates = []tls.Certificate{pair}
			}
			dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		} else {
			dial = append(dial, grpc.WithInsecure())
		}
		ctx, cancel := timeout(10 * time.Second)
		conn, err := grpc.DialContext(ctx, *target, dial...)
		cancel()
		if err != nil {
			fail(fmt.Errorf("connecting to %s: %w", *target, err))
		}
		var names []string
		if *caseList != "" {
			names = strings.Split(*caseList, ",")
		}
		failed := runCases(conn, names)
		conn.Close()
		if failed > 0 {
			os.Exit(1)
		}
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}
