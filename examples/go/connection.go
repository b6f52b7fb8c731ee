package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"time"

	"imagewire.dev/client/imagewire"
)

// connection is the flags every command shares, named like the Python CLI's.
type connection struct {
	target                          string
	timeout                         time.Duration
	maxAttempts                     int
	noRetry, noHealthCheck, useTLS  bool
	token, ca, cert, key, tlsServer string
}

func connectionFlags(fs *flag.FlagSet, targetVariable, defaultTarget string, timeout time.Duration) *connection {
	c := &connection{}
	target := os.Getenv(targetVariable)
	if target == "" {
		target = defaultTarget
	}
	fs.StringVar(&c.target, "target", target, fmt.Sprintf("gRPC target (default $%s or %s)", targetVariable,
		defaultTarget))
	fs.DurationVar(&c.timeout, "timeout", timeout, "deadline of the command's calls")
	fs.IntVar(&c.maxAttempts, "max-attempts", imagewire.MaxAttempts,
		"attempts per call, retries on another replica included (1-5)")
	fs.BoolVar(&c.noRetry, "no-retry", false, "never retry a call (--max-attempts 1)")
	fs.BoolVar(&c.noHealthCheck, "no-health-check", false,
		"do not health-check the target's replicas (a proxy such as Envoy does it)")
	fs.StringVar(&c.token, "auth-token", os.Getenv("IMAGEWIRE_AUTH_TOKEN"), "bearer token (default $IMAGEWIRE_AUTH_TOKEN)")
	fs.BoolVar(&c.useTLS, "tls", false, "use TLS with the system's trusted roots (default: plaintext)")
	fs.StringVar(&c.ca, "tls-ca", "", "CA certificate to verify the server (implies --tls)")
	fs.StringVar(&c.cert, "tls-cert", "", "client certificate for mutual TLS")
	fs.StringVar(&c.key, "tls-key", "", "client private key for mutual TLS")
	fs.StringVar(&c.tlsServer, "tls-server-name", "", "expected name in the server certificate")
	return c
}

func (c *connection) options() ([]imagewire.DialOption, error) {
	opts := []imagewire.DialOption{imagewire.WithTimeout(c.timeout), imagewire.WithToken(c.token),
		imagewire.WithMaxAttempts(c.maxAttempts)}
	if c.noRetry {
		opts = append(opts, imagewire.WithMaxAttempts(1))
	}
	if c.noHealthCheck {
		opts = append(opts, imagewire.WithoutHealthCheck())
	}
	if !c.useTLS && c.ca == "" && c.cert == "" {
		return opts, nil
	}
	config := &tls.Config{ServerName: c.tlsServer, MinVersion: tls.VersionTLS12}
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, err
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usageError{fmt.Errorf("--tls-ca %s holds no PEM certificate", c.ca)}
		}
	}
	if (c.cert == "") != (c.key == "") {
		return nil, usageError{fmt.Errorf("mutual TLS needs both --tls-cert and --tls-key")}
	}
	if c.cert != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return append(opts, imagewire.WithTLS(config)), nil
}
