use super::*;

/// A self-signed P-256 certificate; its thumbprint below was computed by
/// `openssl x509 -outform der | openssl dgst -sha256 -binary | basenc --base64url`.
const PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUawKd8qpoFIxcpB+jPRodkk+AUZAwCgYIKoZIzj0EAwIw
ETEPMA0GA1UEAwwGY2xpZW50MB4XDTI2MTIwNTEwNTQzNloXDTM2MTIwMjEwNTQz
NlowETEPMA0GA1UEAwwGY2xpZW50MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
83xddyT5hkGBawZ6s+V0EQRTljucSbD4tNzdinMqbdrHZ1WwcOH03wfOFQZF1ywI
eTJvhV6ypiUleFUByVGxzqNTMFEwHQYDVR0OBBYEFF56iYrQwM7VyMSHbS3aFV16
DH9vMB8GA1UdIwQYMBaAFF56iYrQwM7VyMSHbS3aFV16DH9vMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgL8A8y0T1CYSTd/DvIgzd8EqtvDsdFGEG
AGYsq1AwczECIQDHFiC2I15/rhX+gp3K8TWunYhKSJSlTqEdPMoUCrzcxA==
-----END CERTIFICATE-----
";
const THUMBPRINT: &str = "ab-AOFAv-RQqiA9rqzXeTQ-Gz2cyrNrlg6r0REpL-U0";
const SHA256_HEX: &str = "69bf8038502ff9142a880f6bab35de4d0f86cf6732acdae583aaf4444a4bf94d";

/// `PEM` as NGINX's `$ssl_client_escaped_cert` writes it.
fn escaped() -> String {
    percent_encoding::utf8_percent_encode(PEM, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn the_thumbprint_is_the_base64url_sha256_of_the_der() {
    let der = CertificateDer::from_pem_slice(PEM.as_bytes()).unwrap();
    let thumbprint = Thumbprint::of_der(&der);
    assert_eq!(thumbprint.as_str(), THUMBPRINT);
    assert_eq!(thumbprint.to_string(), THUMBPRINT);
}

#[test]
fn nginx_escaped_pem_gives_the_certificate_thumbprint() {
    let header = escaped();
    assert!(header.starts_with("%2D%2D%2D%2D%2DBEGIN%20CERTIFICATE"));
    let thumbprint = from_header(header.as_bytes(), HeaderFormat::EscapedPem).unwrap();
    assert_eq!(thumbprint.as_str(), THUMBPRINT);
}

#[test]
fn xfcc_hash_and_cert_give_the_certificate_thumbprint() {
    let by_hash = format!(
        "By=spiffe://cluster.local/ns/default/sa/gw;Hash={SHA256_HEX};Subject=\"CN=client,O=a;b\";URI=spiffe://c"
    );
    let by_cert = format!("By=spiffe://gw;Cert=\"{}\";Subject=\"\"", escaped());
    for value in [by_hash, by_cert] {
        let thumbprint = from_header(value.as_bytes(), HeaderFormat::Xfcc);
        assert_eq!(
            thumbprint.map(|t| t.to_string()).as_deref(),
            Some(THUMBPRINT),
            "{value}"
        );
    }
}

#[test]
fn xfcc_reads_the_element_the_nearest_proxy_appended() {
    let value = format!(
        "Hash={};Subject=\"CN=a,O=x\",By=spiffe://edge;Hash={SHA256_HEX}",
        "00".repeat(32)
    );
    let thumbprint = from_header(value.as_bytes(), HeaderFormat::Xfcc).unwrap();
    assert_eq!(thumbprint.as_str(), THUMBPRINT);
}

#[test]
fn values_that_name_no_certificate_give_none() {
    for (value, format) in [
        ("", HeaderFormat::Xfcc),
        ("By=spiffe://gw;Subject=\"CN=x\"", HeaderFormat::Xfcc),
        ("Hash=zz", HeaderFormat::Xfcc),
        ("Hash=69bf80", HeaderFormat::Xfcc),
        ("Cert=\"not%20a%20pem\"", HeaderFormat::Xfcc),
        ("", HeaderFormat::EscapedPem),
        (
            "-----BEGIN%20CERTIFICATE-----%0Agarbage",
            HeaderFormat::EscapedPem,
        ),
        (THUMBPRINT, HeaderFormat::EscapedPem),
    ] {
        assert_eq!(from_header(value.as_bytes(), format), None, "{value:?}");
    }
    assert_eq!(from_header(b"\xff\xfe", HeaderFormat::EscapedPem), None);
}

#[test]
fn a_ca_bundle_needs_a_certificate_that_parses() {
    let read_as = |bytes: &'static [u8]| move |_: &Path| Ok(bytes.to_vec());
    let path = PathBuf::from("/ca.pem");
    let loaded = ClientCertAuthority::load(
        path.clone(),
        ClientCertMode::Required,
        &read_as(PEM.as_bytes()),
    )
    .unwrap();
    assert_eq!((loaded.roots, loaded.mode), (1, ClientCertMode::Required));
    assert!(loaded.verifier.client_auth_mandatory());
    let optional = ClientCertAuthority::load(
        path.clone(),
        ClientCertMode::Optional,
        &read_as(PEM.as_bytes()),
    )
    .unwrap();
    assert!(optional.verifier.offer_client_auth() && !optional.verifier.client_auth_mandatory());

    let error =
        ClientCertAuthority::load(path.clone(), ClientCertMode::Required, &read_as(b"hello"))
            .unwrap_err();
    assert_eq!(
        error.to_string(),
        "/ca.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    );
    let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let error = ClientCertAuthority::load(path.clone(), ClientCertMode::Required, &read_as(broken))
        .unwrap_err();
    assert!(
        error.to_string().starts_with(
            "/ca.pem: the certificate cannot be parsed: certificate 1 of the bundle: "
        ),
        "{error}"
    );
    let missing = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
    let error = ClientCertAuthority::load(path, ClientCertMode::Required, &missing).unwrap_err();
    assert!(
        error.to_string().starts_with("cannot read /ca.pem: "),
        "{error}"
    );
}
