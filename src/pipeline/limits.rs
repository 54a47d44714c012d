//! Caps on the request head, checked before routing and authentication.
//! Pingora's HTTP/1 parser has limits of its own, far above ours, and
//! answers a bare 400 when they are crossed; keeping ours below them makes
//! jwtgate's 414/431 the answer a client gets.

/// Header fields Pingora's parser accepts at most (`MAX_HEADERS` in
/// pingora-core's http/v1); one more and it refuses the request itself.
pub const PINGORA_MAX_HEADERS: usize = 256;
/// The longest request-target Pingora can hold (the `http` crate's URI limit).
pub const PINGORA_MAX_URI_BYTES: usize = u16::MAX as usize - 1;
/// The most header bytes jwtgate may be told to allow. Pingora refuses a
/// request head (request line and header section, as sent) over about
/// 1 MiB; half of that leaves room for the request line and for whitespace
/// our count leaves out.
pub const MAX_HEADER_BYTES_CEILING: usize = 512 * 1024;

/// The bytes a header field is counted as: `name: value` and its line end.
const FIELD_OVERHEAD: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    max_header_bytes: usize,
    max_headers: usize,
    max_uri_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("limits.{field} is {value}: it must be between {min} and {max}{why}")]
    OutOfRange {
        field: &'static str,
        value: usize,
        min: usize,
        max: usize,
        why: &'static str,
    },
}

/// Which cap a request crossed; each has its own status and log reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    UriTooLong,
    TooManyHeaders,
    HeadersTooLarge,
}

impl LimitExceeded {
    pub const ALL: [LimitExceeded; 3] = [
        LimitExceeded::UriTooLong,
        LimitExceeded::TooManyHeaders,
        LimitExceeded::HeadersTooLarge,
    ];

    pub fn status(self) -> u16 {
        match self {
            LimitExceeded::UriTooLong => 414,
            LimitExceeded::TooManyHeaders | LimitExceeded::HeadersTooLarge => 431,
        }
    }

    /// The access log's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitExceeded::UriTooLong => "uri_too_long",
            LimitExceeded::TooManyHeaders => "too_many_headers",
            LimitExceeded::HeadersTooLarge => "headers_too_large",
        }
    }

    /// The `error` and `error_description` of the response body.
    pub fn error(self) -> (&'static str, &'static str) {
        match self {
            LimitExceeded::UriTooLong => ("uri_too_long", "the request target is too long"),
            LimitExceeded::TooManyHeaders | LimitExceeded::HeadersTooLarge => (
                "request_header_fields_too_large",
                "the request headers are too large",
            ),
        }
    }
}

impl RequestLimits {
    pub fn new(
        max_header_bytes: usize,
        max_headers: usize,
        max_uri_bytes: usize,
    ) -> Result<Self, LimitsError> {
        const ABOVE_PINGORA: &str = " (above that, the HTTP parser refuses the request first)";
        let check = |field, value, min, max, why| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(LimitsError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                    why,
                })
            }
        };
        check(
            "max_header_bytes",
            max_header_bytes,
            1,
            MAX_HEADER_BYTES_CEILING,
            ABOVE_PINGORA,
        )?;
        check(
            "max_headers",
            max_headers,
            1,
            PINGORA_MAX_HEADERS,
            ABOVE_PINGORA,
        )?;
        check(
            "max_uri_bytes",
            max_uri_bytes,
            1,
            PINGORA_MAX_URI_BYTES,
            ABOVE_PINGORA,
        )?;
        Ok(Self {
            max_header_bytes,
            max_headers,
            max_uri_bytes,
        })
    }

    /// `target` is the request-target as received; `headers` every header
    /// field. Each field counts `name: value` plus its line end, the way it
    /// was sent when sent without extra whitespace. Reads only: nothing is
    /// allocated, and the byte count stops as soon as it is over.
    pub fn check(&self, target: &[u8], headers: &http::HeaderMap) -> Result<(), LimitExceeded> {
        if target.len() > self.max_uri_bytes {
            return Err(LimitExceeded::UriTooLong);
        }
        // `len` counts every value, repeated names included: one per field line.
        if headers.len() > self.max_headers {
            return Err(LimitExceeded::TooManyHeaders);
        }
        let mut bytes = 0;
        for (name, value) in headers {
            bytes += name.as_str().len() + value.len() + FIELD_OVERHEAD;
            if bytes > self.max_header_bytes {
                return Err(LimitExceeded::HeadersTooLarge);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn each_cap_admits_its_value_and_refuses_one_more() {
        let limits = RequestLimits::new(20, 2, 4).unwrap();
        let empty = http::HeaderMap::new();
        assert_eq!(limits.check(b"/abc", &empty), Ok(()));
        assert_eq!(
            limits.check(b"/abcd", &empty),
            Err(LimitExceeded::UriTooLong)
        );
        // `a: 123456789012345` and its line end are 1 + 15 + 4 = 20 bytes.
        assert_eq!(
            limits.check(b"/", &headers(&[("a", "123456789012345")])),
            Ok(())
        );
        assert_eq!(
            limits.check(b"/", &headers(&[("a", "1234567890123456")])),
            Err(LimitExceeded::HeadersTooLarge)
        );
        // Repeated names count once per field line.
        assert_eq!(
            limits.check(b"/", &headers(&[("a", "1"), ("a", "2")])),
            Ok(())
        );
        assert_eq!(
            limits.check(b"/", &headers(&[("a", "1"), ("a", "2"), ("b", "3")])),
            Err(LimitExceeded::TooManyHeaders)
        );
    }

    #[test]
    fn caps_above_the_parsers_own_are_refused_by_name() {
        assert_eq!(
            RequestLimits::new(32768, 257, 8192)
                .unwrap_err()
                .to_string(),
            "limits.max_headers is 257: it must be between 1 and 256 (above that, the HTTP parser refuses the request first)"
        );
        assert!(
            RequestLimits::new(32768, 100, 65535)
                .unwrap_err()
                .to_string()
                .starts_with("limits.max_uri_bytes is 65535: it must be between 1 and 65534")
        );
        assert!(
            RequestLimits::new(0, 100, 8192)
                .unwrap_err()
                .to_string()
                .starts_with("limits.max_header_bytes is 0: it must be between 1 and 524288")
        );
    }
}
