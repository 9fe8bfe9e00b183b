//! `/ui/session`: the dashboard's sign-in, as the page sees it (never the key).

use serde::{Deserialize, Serialize};

/// `POST /ui/session` with an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    /// The key to exchange for a session cookie.
    pub api_key: String,
}

/// The answer of `POST`/`GET /ui/session`: `{"signed_in": false}`, or the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionBody {
    /// Whether the cookie names a live session.
    pub signed_in: bool,
    /// What every request but GET/HEAD/OPTIONS sends as `X-CSRF-Token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    /// Seconds the session has left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// What this hearth offers the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
}

/// The optional parts of the API the dashboard may show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// Whether the AutoTuner's routes are there.
    pub tuning: bool,
}

impl SessionBody {
    /// `{"signed_in": false}`.
    pub fn signed_out() -> SessionBody {
        SessionBody {
            signed_in: false,
            csrf_token: None,
            expires_in_s: None,
            features: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::assert_round_trips;

    #[test]
    fn the_documented_session_bodies_round_trip() {
        let live: SessionBody = assert_round_trips(
            r#"{"signed_in": true, "csrf_token": "c5f0", "expires_in_s": 43200,
            "features": {"tuning": true}}"#,
        );
        assert_eq!(live.features, Some(Features { tuning: true }));
        let out: SessionBody = assert_round_trips(r#"{"signed_in": false}"#);
        assert_eq!(out, SessionBody::signed_out());
        assert_round_trips::<SignIn>(r#"{"api_key": "hk_abc"}"#);
    }
}
