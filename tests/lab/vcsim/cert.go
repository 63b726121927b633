package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// labCert is the server's certificate and its fingerprints in VDDK's "AA:BB:..." form.
type labCert struct {
	pair   tls.Certificate
	sha1   string
	sha256 string
}

// makeCertificate generates a self-signed RSA-2048 certificate valid for 127.0.0.1 and
// localhost, and writes it (certificate only, no key) to pemPath.
func makeCertificate(pemPath string) (*labCert, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "safekeeping-lab vcsim", Organization: []string{"safekeeping lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		// Not a CA: rustls/webpki refuse CA certificates as server certificates; a
		// self-signed leaf works both as a pinned certificate and as its own trust anchor.
		IsCA:        false,
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFileAtomic(pemPath, pemBytes, 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", pemPath, err)
	}
	s1 := sha1.Sum(der)
	s256 := sha256.Sum256(der)
	return &labCert{
		pair:   tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		sha1:   colonHex(s1[:]),
		sha256: colonHex(s256[:]),
	}, nil
}

// writeCertAndKey makes a certificate like the simulator's and writes it and its private
// key (PKCS#8 PEM, mode 0600) for another server of the lab (the S3 gateway with --tls).
func writeCertAndKey(certPath, keyPath string) error {
	cert, err := makeCertificate(certPath)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.pair.PrivateKey)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", keyPath, err)
	}
	return nil
}

func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}
