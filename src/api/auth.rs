//! Authentication of callers: `payload` mode trusts the principal in the create-session body;
//! `trusted_headers` mode requires a shared token (compared in constant time) and the tenant,
//! actor and roles headers, and binds every session to its owner.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;
use workspace_events::Principal;
use workspace_projections::SessionView;

use super::{ApiError, RequestId};
use crate::app::App;
use crate::config::AuthMode;
use crate::error_code::ErrorCode;

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Payload mode: no authentication, no ownership checks.
    Anonymous,
    /// Trusted-headers mode: the authenticated principal.
    Authenticated(Principal),
}

impl Caller {
    /// Refuses access to a session owned by someone else.
    pub fn check_owner(&self, session: &SessionView, rid: &str) -> Result<(), ApiError> {
        match self {
            Caller::Anonymous => Ok(()),
            Caller::Authenticated(p) => {
                if p.tenant_id == session.principal.tenant_id
                    && p.actor_id == session.principal.actor_id
                {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        ErrorCode::PolicyDenied,
                        "session does not belong to authenticated principal",
                        rid,
                    ))
                }
            }
        }
    }
}

fn header(parts: &Parts, name: &str) -> String {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let AuthMode::TrustedHeaders {
            token,
            tenant_header,
            actor_header,
            roles_header,
            token_header,
        } = &app.config.auth
        else {
            return Ok(Caller::Anonymous);
        };
        let rid = RequestId::from_request_parts(parts, app)
            .await
            .map(|r| r.0)
            .unwrap_or_default();
        let given = header(parts, token_header);
        let matches: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
        if given.is_empty() || !matches {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "invalid authentication token",
                &rid,
            ));
        }
        let tenant_id = header(parts, tenant_header);
        let actor_id = header(parts, actor_header);
        if tenant_id.is_empty() || actor_id.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "authenticated principal headers are required",
                &rid,
            ));
        }
        let mut roles: Vec<String> = Vec::new();
        for role in header(parts, roles_header).split(',') {
            let role = role.trim();
            if !role.is_empty() && !roles.iter().any(|r| r == role) {
                roles.push(role.to_owned());
            }
        }
        Ok(Caller::Authenticated(Principal {
            tenant_id,
            actor_id,
            roles,
        }))
    }
}
