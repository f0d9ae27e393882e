//! PURE access layer: `gitlab-access` declarations + GitLabTrusts + ceilings -> grants (ServiceAccount,
//! Role, RoleBinding); GitLab ID-token claims -> the one grant a job gets. No client, no async, no IO:
//! the controller (RBAC objects), the token-exchange service, `render` and `explain` all derive
//! through [`World::derive`].
//!
//! - `declaration`: the one walker of declarations in an Application;
//! - `grant`: the outcome types and `derive_grants`, which checks a declaration and assembles a grant
//!   from `validate` (subjects, allow list, TTL), `rules` (presets, explicit rules, the ceiling),
//!   `objects` (the RBAC objects and their names) and `agent` (GitLab agent groups);
//! - `world`: everything a derivation reads besides the Application;
//! - `matcher`, `claims`, `condition`, `glob`, `selector`, `ceiling`, `kinds`: the pieces those use;
//! - `authn`: the same rules as the API server's own JWT authenticator (federation mode 3).
mod agent;
pub mod authn;
pub mod ceiling;
pub mod claims;
pub mod condition;
pub mod declaration;
pub mod glob;
pub mod grant;
pub mod kinds;
pub mod matcher;
pub mod objects;
pub mod rights;
pub mod rules;
pub mod selector;
mod validate;
pub mod world;

pub use authn::{AuthnConfig, authentication_config};
pub use claims::GitLabClaims;
pub use grant::{
    Grant, GrantInput, GrantSet, GrantWarning, Refusal, RefusalReason, Unenforceable, derive_grants,
};
pub use matcher::{MatchOutcome, match_token};
pub use world::{DefinitionCatalog, Derived, MissingNamespace, World};
