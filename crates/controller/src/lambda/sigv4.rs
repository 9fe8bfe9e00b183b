//! AWS Signature Version 4, verified: the canonical request, the string to sign and the
//! signing key are recomputed from the request as received and the secret of the access
//! key it names; the signature must match exactly and the signing time must be within
//! [`MAX_SKEW`] of now.
//!
//! Pure functions over a [`SignedRequest`] (no HTTP types beyond `HeaderMap`), so the
//! published test vectors of the AWS Signature V4 test suite run against them.

use axum::http::HeaderMap;
use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Largest difference accepted between the signing time and now, as AWS.
pub const MAX_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a request's signature is not accepted; each names what the client should fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigV4Error {
    /// No `Authorization` header.
    #[error("missing Authentication Token: sign the request with AWS Signature Version 4")]
    Missing,
    /// An `Authorization` header that is not a complete SigV4 one.
    #[error("incomplete signature: {0}")]
    Incomplete(String),
    /// An access key id no key of this hearth has.
    #[error("the security token included in the request is invalid: unknown access key id {0:?}")]
    UnknownKey(String),
    /// The signing time is too far from now.
    #[error("signature expired: {signed} is more than 15 minutes from the server's time {now}")]
    Expired {
        /// The request's signing time.
        signed: String,
        /// The server's time.
        now: String,
    },
    /// The signature does not match the one computed with the key's secret.
    #[error("the request signature we calculated does not match the signature you provided: check your AWS secret access key (the hearth key's secret) and signing method")]
    Mismatch,
}

/// The parts of a request a signature covers.
pub struct SignedRequest<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// The path as sent (percent-encoded as on the request line).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Every header of the request.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id.
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    /// Region of the scope (any: hearth is one region).
    pub region: String,
    /// Service of the scope.
    pub service: String,
    /// Lower-case names of the signed headers, in the header's order.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

impl Authorization {
    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parses the `Authorization` header's value.
pub fn parse_authorization(value: &str) -> Result<Authorization, SigV4Error> {
    let incomplete = |what: &str| SigV4Error::Incomplete(what.to_string());
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| incomplete("the Authorization header must start with AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Credential= is missing"))?;
    let signed = signed.ok_or_else(|| incomplete("SignedHeaders= is missing"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature= is missing"))?;
    let fields: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = fields[..] else {
        return Err(incomplete(
            "Credential must be KEY/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    };
    if key.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete("Credential has an empty key id or a bad date"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("SignedHeaders must include host"));
    }
    Ok(Authorization {
        access_key_id: key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// Verifies `request` signed for `service`, with `secret_of` giving the secret of an
/// access key id; returns the verified authorization.
pub fn verify(
    request: &SignedRequest<'_>,
    service: &str,
    secret_of: impl Fn(&str) -> Option<String>,
    now: DateTime<Utc>,
) -> Result<Authorization, SigV4Error> {
    let header = request
        .headers
        .get("authorization")
        .ok_or(SigV4Error::Missing)?
        .to_str()
        .map_err(|_| SigV4Error::Incomplete("the Authorization header is not text".into()))?;
    let auth = parse_authorization(header)?;
    if auth.service != service {
        return Err(SigV4Error::Incomplete(format!(
            "the credential scope names service {:?}: sign for {service:?}",
            auth.service
        )));
    }
    let amz_date = request
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SigV4Error::Incomplete("the X-Amz-Date header is missing".into()))?;
    let signed_at = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| {
            SigV4Error::Incomplete(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
        })?
        .and_utc();
    if !amz_date.starts_with(&auth.date) {
        return Err(SigV4Error::Incomplete(
            "the credential scope's date is not the day of X-Amz-Date".into(),
        ));
    }
    if (now - signed_at).abs() > MAX_SKEW {
        return Err(SigV4Error::Expired {
            signed: amz_date.to_string(),
            now: now.format("%Y%m%dT%H%M%SZ").to_string(),
        });
    }
    let secret = secret_of(&auth.access_key_id)
        .ok_or_else(|| SigV4Error::UnknownKey(auth.access_key_id.clone()))?;
    let expected = signature(request, &auth, amz_date, &secret);
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(auth)
    } else {
        Err(SigV4Error::Mismatch)
    }
}

/// The hex signature of `request` under `auth`'s scope and signed headers.
pub fn signature(
    request: &SignedRequest<'_>,
    auth: &Authorization,
    amz_date: &str,
    secret: &str,
) -> String {
    let canonical = canonical_request(request, &auth.signed_headers);
    let to_sign = string_to_sign(amz_date, &auth.scope(), &canonical);
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    hex::encode(hmac(&key, to_sign.as_bytes()))
}

/// The canonical request: method, URI, query, headers, signed header names, payload hash.
pub fn canonical_request(request: &SignedRequest<'_>, signed_headers: &[String]) -> String {
    let headers: String = signed_headers
        .iter()
        .map(|name| {
            let values: Vec<String> = request
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
                .collect();
            format!("{name}:{}\n", values.join(","))
        })
        .collect();
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.path),
        canonical_query(request.query),
        headers,
        signed_headers.join(";"),
        hex::encode(Sha256::digest(request.body)),
    )
}

/// `AWS4-HMAC-SHA256`, the time, the scope and the hash of the canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The key derived from the secret for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length, so this constructor cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The path with `.`/`..` and empty segments removed, each byte outside the unreserved
/// set percent-encoded (so a path sent encoded is encoded twice, as the AWS SDKs sign
/// every service but S3).
pub fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(
        &segments
            .iter()
            .map(|s| uri_encode(s.as_bytes()))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// Parameters decoded, re-encoded strictly and sorted by name, then value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compares without an early exit, so the time taken says nothing about the signature.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    //! Vectors of the AWS Signature Version 4 test suite (credentials AKIDEXAMPLE, scope
    //! 20150830/us-east-1/service, time 20150830T123600Z).
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn headers(extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        h.insert("x-amz-date", HeaderValue::from_static(DATE));
        for (k, v) in extra {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn auth(signed: &str) -> Authorization {
        parse_authorization(&format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature=00"
        ))
        .unwrap()
    }

    fn creq_hash(req: &SignedRequest<'_>, signed: &str) -> String {
        hex::encode(Sha256::digest(
            canonical_request(req, &auth(signed).signed_headers).as_bytes(),
        ))
    }

    #[test]
    fn get_vanilla() {
        let h = headers(&[]);
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        assert_eq!(
            creq_hash(&req, "host;x-amz-date"),
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            signature(&req, &auth("host;x-amz-date"), DATE, SECRET),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let h = headers(&[]);
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &h,
            body: b"",
        };
        assert_eq!(
            canonical_request(&req, &auth("host;x-amz-date").signed_headers)
                .lines()
                .nth(2),
            Some("Param1=value1&Param2=value2")
        );
        assert_eq!(
            creq_hash(&req, "host;x-amz-date"),
            "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"
        );
        assert_eq!(
            signature(&req, &auth("host;x-amz-date"), DATE, SECRET),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"Param1=value1",
        };
        let signed = "content-type;host;x-amz-date";
        assert_eq!(
            creq_hash(&req, signed),
            "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"
        );
        assert_eq!(
            signature(&req, &auth(signed), DATE, SECRET),
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn get_header_key_duplicate() {
        let h = headers(&[
            ("my-header1", "value2"),
            ("my-header1", "value2"),
            ("my-header1", "value1"),
        ]);
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        let signed = "host;my-header1;x-amz-date";
        assert_eq!(
            signature(&req, &auth(signed), DATE, SECRET),
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"
        );
    }

    #[test]
    fn get_utf8_and_path_normalisation() {
        let h = headers(&[]);
        let req = SignedRequest {
            method: "GET",
            path: "/ሴ",
            query: "",
            headers: &h,
            body: b"",
        };
        assert_eq!(
            creq_hash(&req, "host;x-amz-date"),
            "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102"
        );
        assert_eq!(canonical_uri("/example1/example2/../.."), "/");
        assert_eq!(canonical_uri("/./example"), "/example");
        assert_eq!(canonical_uri("//"), "/");
        assert_eq!(canonical_uri("/example space/"), "/example%20space/");
        // A path the client sent encoded is encoded again, as botocore signs it.
        assert_eq!(
            canonical_uri("/2015-03-31/functions/arn%3Aaws%3Alambda/invocations"),
            "/2015-03-31/functions/arn%253Aaws%253Alambda/invocations"
        );
    }

    fn signed_request(secret: &str, when: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        h.insert("x-amz-date", HeaderValue::from_str(when).unwrap());
        let unsigned = SignedRequest {
            method: "POST",
            path: "/x",
            query: "",
            headers: &h,
            body: b"{}",
        };
        let scope_date = &when[..8];
        let mut a = parse_authorization(&format!(
            "AWS4-HMAC-SHA256 Credential=admin/{scope_date}/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
        ))
        .unwrap();
        a.signature = signature(&unsigned, &a, when, secret);
        let value = format!(
            "AWS4-HMAC-SHA256 Credential=admin/{scope_date}/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
            a.signature
        );
        h.insert("authorization", HeaderValue::from_str(&value).unwrap());
        h
    }

    #[test]
    fn verification_needs_the_right_secret_key_and_time() {
        let now = Utc::now();
        let when = now.format("%Y%m%dT%H%M%SZ").to_string();
        let lookup = |id: &str| (id == "admin").then(|| "s3cret".to_string());
        let check = |h: &HeaderMap, body: &[u8], at| {
            let req = SignedRequest {
                method: "POST",
                path: "/x",
                query: "",
                headers: h,
                body,
            };
            verify(&req, "lambda", lookup, at)
        };
        let good = signed_request("s3cret", &when);
        assert_eq!(
            check(&good, b"{}", now).map(|a| a.access_key_id),
            Ok("admin".to_string())
        );
        assert_eq!(
            check(&good, b"{\"x\":1}", now).err(),
            Some(SigV4Error::Mismatch)
        );
        let wrong = signed_request("other", &when);
        assert_eq!(check(&wrong, b"{}", now).err(), Some(SigV4Error::Mismatch));
        let late = now + chrono::TimeDelta::minutes(16);
        assert!(matches!(
            check(&good, b"{}", late),
            Err(SigV4Error::Expired { .. })
        ));
        assert!(check(&good, b"{}", now + chrono::TimeDelta::minutes(14)).is_ok());
        let unknown = |_: &str| None;
        let req = SignedRequest {
            method: "POST",
            path: "/x",
            query: "",
            headers: &good,
            body: b"{}",
        };
        assert_eq!(
            verify(&req, "lambda", unknown, now).err(),
            Some(SigV4Error::UnknownKey("admin".into()))
        );
        assert_eq!(
            verify(&req, "s3", lookup, now).map_err(|e| matches!(e, SigV4Error::Incomplete(_))),
            Err(true)
        );
    }
}
