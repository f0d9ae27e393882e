//! PURE access layer: `gitlab-access` declarations + GitLabTrusts + ceilings -> grants (ServiceAccount,
//! Role, RoleBinding); GitLab ID-token claims -> the one grant a job gets. No client, no async, no IO:
//! the controller (RBAC objects), the token-exchange service and `explain` all call these functions.
pub mod ceiling;
pub mod claims;
pub mod condition;
pub mod glob;
pub mod grant;
pub mod kinds;
pub mod matcher;
pub mod selector;

pub use claims::GitLabClaims;
pub use grant::{
    Grant, GrantInput, GrantSet, GrantWarning, Refusal, RefusalReason, Unenforceable, derive_grants,
};
pub use matcher::{MatchOutcome, match_token};
