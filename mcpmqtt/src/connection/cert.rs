//! The client certificate of mutual TLS: reading its PEM, and the subject
//! CN the broker takes as the identity (Mosquitto's
//! `use_identity_as_username`, EMQX's `peer_cert_as_username = cn`).
//!
//! The CN is read with a small DER walk over the certificate's
//! `tbsCertificate` down to its subject (RFC 5280, section 4.1): nothing
//! else of the certificate is interpreted here. Whether the certificate is
//! valid (its CA, its dates) is the broker's to say, at connect.

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// A client certificate chain and its private key, as PEM.
#[derive(Clone)]
pub(crate) struct ClientCertPem {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

/// A client certificate read from its PEM, ready for rustls.
pub(crate) struct ClientCert {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// What is wrong with a client certificate, as [`Error::Connect`]: it is
/// found as the connection is set up, and no connection can be made with it.
fn unusable(why: impl std::fmt::Display) -> Error {
    Error::Connect(format!("the client certificate cannot be used: {why}"))
}

impl ClientCertPem {
    /// The certificate chain (the client's own certificate first), and the
    /// private key: PKCS#8 (`BEGIN PRIVATE KEY`), RSA (`BEGIN RSA PRIVATE
    /// KEY`) or EC (`BEGIN EC PRIVATE KEY`).
    pub(crate) fn load(&self) -> Result<ClientCert, Error> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unusable(format!("its PEM cannot be read ({e})")))?;
        if chain.is_empty() {
            return Err(unusable(
                "the certificate PEM holds no certificate (no `-----BEGIN CERTIFICATE-----` block)",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| match e {
            pem::Error::NoItemsFound => unusable(
                "it has no private key: the key PEM holds none (expected a PKCS#8 `-----BEGIN PRIVATE KEY-----`, \
                 an RSA `-----BEGIN RSA PRIVATE KEY-----` or an EC `-----BEGIN EC PRIVATE KEY-----` block)",
            ),
            other => unusable(format!("its private key cannot be read ({other})")),
        })?;
        Ok(ClientCert { chain, key })
    }

    /// The subject CN of the client's own certificate (the first of the PEM).
    pub(crate) fn common_name(&self) -> Result<String, Error> {
        let chain = self.load()?;
        subject_common_name(&chain.chain[0]).map_err(unusable)
    }
}

/// The first subject CN of a DER certificate, which Mosquitto, EMQX and
/// HiveMQ take as the identity when told to.
pub(crate) fn subject_common_name(der: &[u8]) -> Result<String, String> {
    let malformed = |what: &str| format!("it is not a well-formed X.509 certificate ({what})");
    let (certificate, _) = Der(der).expect(SEQUENCE).map_err(|()| malformed("no certificate"))?;
    let (tbs, _) = Der(certificate)
        .expect(SEQUENCE)
        .map_err(|()| malformed("no tbsCertificate"))?;
    let mut fields = Der(tbs);
    // version [0] EXPLICIT, absent for v1 certificates.
    if fields.0.first() == Some(&CONTEXT_0) {
        fields.skip().map_err(|()| malformed("version"))?;
    }
    for what in ["serialNumber", "signature", "issuer", "validity"] {
        fields.skip().map_err(|()| malformed(what))?;
    }
    let (subject, _) = fields.expect(SEQUENCE).map_err(|()| malformed("subject"))?;
    let mut rdns = Der(subject);
    while !rdns.0.is_empty() {
        let (rdn, rest) = rdns.expect(SET).map_err(|()| malformed("subject"))?;
        rdns = Der(rest);
        let mut attributes = Der(rdn);
        while !attributes.0.is_empty() {
            let (attribute, rest) = attributes.expect(SEQUENCE).map_err(|()| malformed("subject"))?;
            attributes = Der(rest);
            let mut parts = Der(attribute);
            let (oid, _) = parts.expect(OID).map_err(|()| malformed("subject"))?;
            if oid != OID_COMMON_NAME {
                continue;
            }
            let (tag, value) = parts.any().map_err(|()| malformed("subject CN"))?;
            return directory_string(tag, value);
        }
    }
    Err("its subject has no CN (common name), which the broker takes as the identity".into())
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const CONTEXT_0: u8 = 0xA0;
/// 2.5.4.3, id-at-commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// A CN's value (a DirectoryString) as text.
fn directory_string(tag: u8, value: &[u8]) -> Result<String, String> {
    const UTF8: u8 = 0x0C;
    const PRINTABLE: u8 = 0x13;
    const TELETEX: u8 = 0x14;
    const IA5: u8 = 0x16;
    const BMP: u8 = 0x1E;
    let text = match tag {
        UTF8 | PRINTABLE | TELETEX | IA5 => String::from_utf8(value.to_vec()).ok(),
        BMP if value.len().is_multiple_of(2) => {
            let units = value.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        _ => None,
    };
    match text {
        Some(text) if !text.is_empty() && !text.contains('\0') => Ok(text),
        Some(_) => Err("its subject CN is empty or holds a NUL character".into()),
        None => Err(format!(
            "its subject CN is not text a broker reads as an identity (ASN.1 tag 0x{tag:02X})"
        )),
    }
}

/// The DER left to read.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element: its tag and contents.
    fn any(&mut self) -> Result<(u8, &'a [u8]), ()> {
        let (&tag, rest) = self.0.split_first().ok_or(())?;
        let (&first, mut rest) = rest.split_first().ok_or(())?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(());
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes.iter().fold(0usize, |len, b| (len << 8) | usize::from(*b))
        };
        if rest.len() < len {
            return Err(());
        }
        let (contents, after) = rest.split_at(len);
        self.0 = after;
        Ok((tag, contents))
    }

    /// The next element, which must have this tag: its contents, and what
    /// follows it.
    fn expect(&mut self, tag: u8) -> Result<(&'a [u8], &'a [u8]), ()> {
        match self.any()? {
            (found, contents) if found == tag => Ok((contents, self.0)),
            _ => Err(()),
        }
    }

    fn skip(&mut self) -> Result<(), ()> {
        self.any().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 certificate made by rcgen-like code, trimmed by hand: the CN is
    /// found after the version, serial, algorithm, issuer and validity.
    fn certificate(subject: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if contents.len() < 0x80 {
                out.push(contents.len() as u8);
            } else {
                out.push(0x82);
                out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(contents);
            out
        }
        let version = tlv(CONTEXT_0, &tlv(0x02, &[2]));
        let serial = tlv(0x02, &[1, 2, 3]);
        let algorithm = tlv(SEQUENCE, &tlv(OID, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]));
        let issuer = tlv(SEQUENCE, &[]);
        let validity = tlv(SEQUENCE, &[0u8; 200]);
        let tbs = [
            version,
            serial,
            algorithm.clone(),
            issuer,
            validity,
            tlv(SEQUENCE, subject),
        ]
        .concat();
        tlv(SEQUENCE, &[tlv(SEQUENCE, &tbs), algorithm, tlv(0x03, &[0])].concat())
    }

    fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let seq = [
            vec![OID, oid.len() as u8],
            oid.to_vec(),
            vec![tag, value.len() as u8],
            value.to_vec(),
        ]
        .concat();
        let seq = [vec![SEQUENCE, seq.len() as u8], seq].concat();
        [vec![SET, seq.len() as u8], seq].concat()
    }

    #[test]
    fn finds_the_cn_among_the_subjects_attributes() {
        let org = attribute(&[0x55, 0x04, 0x0A], 0x0C, b"Acme");
        let cn = attribute(OID_COMMON_NAME, 0x13, b"scout");
        assert_eq!(
            subject_common_name(&certificate(&[org.clone(), cn].concat())),
            Ok("scout".into())
        );
        let bmp = attribute(OID_COMMON_NAME, 0x1E, &[0, b'o', 0, b'p']);
        assert_eq!(subject_common_name(&certificate(&bmp)), Ok("op".into()));
        let err = subject_common_name(&certificate(&org)).unwrap_err();
        assert!(err.contains("no CN"), "{err}");
    }

    #[test]
    fn malformed_der_is_an_error_not_a_panic() {
        let good = certificate(&attribute(OID_COMMON_NAME, 0x0C, b"scout"));
        for cut in 0..good.len() {
            let _ = subject_common_name(&good[..cut]);
        }
        assert!(subject_common_name(&[]).is_err());
        assert!(subject_common_name(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        let nul = attribute(OID_COMMON_NAME, 0x0C, b"a\0b");
        assert!(subject_common_name(&certificate(&nul)).is_err());
    }

    #[test]
    fn a_key_pem_without_a_key_says_so() {
        let pem = ClientCertPem {
            cert: b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".to_vec(),
            key: b"no key here".to_vec(),
        };
        let Err(Error::Connect(why)) = pem.load() else {
            panic!("a key PEM without a key must fail")
        };
        assert!(why.contains("no private key"), "{why}");
        let none = ClientCertPem {
            cert: Vec::new(),
            key: Vec::new(),
        };
        let Err(Error::Connect(why)) = none.load() else {
            panic!("a certificate PEM without a certificate must fail")
        };
        assert!(why.contains("no certificate"), "{why}");
    }
}
