//! `oam-trust status <app>`: what `vela status` shows (phase, each component's health, the workflow,
//! the revision, recent Events) plus the Application's grants (ServiceAccount, access, TTL, last
//! issuance), for a person at a glance or as JSON/YAML.
//!
//! `gather` reads; `render_text` is pure. Only the Application read is required: every other read the
//! caller may not make (a tenant usually cannot list TokenIssuances) becomes [`Readable::Unreadable`]
//! in the report and a note in its place in the text, never a failure.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{Event as CoreEvent, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::access::declaration::declarations;
use crate::access::objects::object_name;
use crate::api::access::{Access, GitLabAccess};
use crate::api::issuance::TokenIssuance;
use crate::api::oam::{
    Application, ApplicationComponentStatus, DefinitionRevisionRef, WorkflowStatus,
    WorkflowStepStatus,
};
use crate::api::revision::ApplicationRevision;
use crate::api::trust::GitLabTrust;
use crate::controller::access::{
    ACCESS_DENIED, ACCESS_READY, ACCESS_UNENFORCEABLE, ACCESS_WARNING, CONDITION_TYPES,
};
use crate::names;

/// `oam-trust status`: an Application's phase, components, workflow, revision, grants and Events.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The Application's name (default: OAM_TRUST_APP, which `oam-trust login` sets).
    #[arg(env = "OAM_TRUST_APP")]
    pub app: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: StatusFormat,
    /// How many of the Application's most recent Events to show.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFormat {
    Text,
    Json,
    Yaml,
}

/// Everything `status` shows, as `-o json|yaml` prints it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub application: String,
    pub namespace: String,
    /// When the report was read (RFC 3339): the ages in the text count from it.
    pub observed_at: String,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub generation: Option<i64>,
    /// The generation `phase` and `components` describe.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `status.status` (`rendering`, `running`, `unhealthy`, `workflowSuspending`, …); none before the
    /// first reconcile.
    #[serde(default)]
    pub phase: Option<String>,
    pub revision: RevisionReport,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub components: Vec<ApplicationComponentStatus>,
    /// `status.workflow`; none for the default workflow (every component applied).
    #[serde(default)]
    pub workflow: Option<WorkflowStatus>,
    #[serde(default)]
    pub grants: Vec<GrantReport>,
    /// The most recent Events of the Application, newest last.
    pub events: Readable<Vec<EventReport>>,
}

/// An optional read: its value, or why the caller cannot see it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Readable<T> {
    Unreadable { unreadable: String },
    Read(T),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionReport {
    /// `status.latestRevision`: the ApplicationRevision the current spec is recorded in.
    #[serde(default)]
    pub latest: Option<DefinitionRevisionRef>,
    /// How many ApplicationRevisions of the Application are kept.
    pub kept: Readable<usize>,
}

/// [`GrantReport::state`]: its ServiceAccount exists (or, where the caller cannot list them, `AccessReady` holds).
pub const GRANTED: &str = "granted";
/// [`GrantReport::state`]: `AccessDenied` names the declaration; no RBAC exists for it.
pub const REFUSED: &str = "refused";
/// [`GrantReport::state`]: neither yet (the controller has not written it).
pub const PENDING: &str = "pending";

/// One `gitlab-access` declaration and what became of it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrantReport {
    /// `policy/<name>` or `component/<component>/trait/<index>`.
    pub grant: String,
    /// The component a trait's grant covers; none for a policy (the whole Application).
    #[serde(default)]
    pub component: Option<String>,
    #[serde(default)]
    pub trust: Option<String>,
    /// `granted` (its ServiceAccount exists), `refused` (see `message`) or `pending`.
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
    /// The grant's ServiceAccount (and Role, RoleBinding), named as the controller names it.
    pub service_account: String,
    /// `read`, `deploy`, `manage`, `rules (<n>)`, or `invalid` when the properties do not parse.
    pub access: String,
    /// Token lifetime (Go duration), when the declaration or a readable trust says it.
    #[serde(default)]
    pub ttl: Option<String>,
    /// Whether `ttl` is the declaration's own (otherwise the trust's default).
    pub ttl_declared: bool,
    /// The newest live TokenIssuance for the grant's ServiceAccount (records go at their expiry).
    pub last_issuance: Readable<Option<IssuanceReport>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuanceReport {
    /// The TokenIssuance's name (`kubectl delete tokenissuance <name>` revokes the token).
    pub name: String,
    pub issued_at: String,
    pub token_expires_at: String,
    #[serde(default)]
    pub job_id: String,
    #[serde(default)]
    pub pipeline_id: String,
    #[serde(default)]
    pub project_path: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, rename = "ref")]
    pub ref_: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventReport {
    /// When it last happened (RFC 3339).
    #[serde(default)]
    pub last_seen: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// How often it happened (an Event series counts its repeats).
    pub count: i32,
}

/// Why `status` could not report.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "Application {name:?} not found in namespace {namespace:?}{origin}; name its namespace with -n <namespace>"
    )]
    NotFound {
        name: String,
        namespace: String,
        /// Where the namespace came from, when the caller did not name it.
        origin: &'static str,
    },
    #[error("reading Application {namespace}/{name}: {source}")]
    Unreadable {
        name: String,
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// Runs `oam-trust status`: exit 0 whenever the Application could be read.
pub async fn status_command(args: StatusArgs) -> anyhow::Result<()> {
    let (client, namespace) = crate::set_image::connect(args.namespace.as_deref()).await?;
    let report = gather(&client, &namespace, &args.app, args.events)
        .await
        .map_err(|e| match e {
            StatusError::NotFound {
                name, namespace, ..
            } if args.namespace.is_none() => StatusError::NotFound {
                name,
                namespace,
                origin: " (the kubeconfig context's namespace)",
            },
            other => other,
        })?;
    match args.output {
        StatusFormat::Text => print!("{}", render_text(&report)),
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        StatusFormat::Yaml => print!("{}", serde_yaml_ng::to_string(&report)?),
    }
    Ok(())
}

/// Reads the Application and, as far as the caller may, its revisions, grants, issuances and Events.
pub async fn gather(
    client: &Client,
    namespace: &str,
    name: &str,
    events: usize,
) -> Result<StatusReport, StatusError> {
    let app = match Api::<Application>::namespaced(client.clone(), namespace)
        .get(name)
        .await
    {
        Ok(app) => app,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(StatusError::NotFound {
                name: name.into(),
                namespace: namespace.into(),
                origin: "",
            });
        }
        Err(e) => {
            return Err(StatusError::Unreadable {
                name: name.into(),
                namespace: namespace.into(),
                source: Box::new(e),
            });
        }
    };
    let (kept, grants, events) = futures::join!(
        revisions_kept(client, namespace, name),
        grants_of(client, &app),
        events_of(client, &app, events),
    );
    let status = app.status.clone().unwrap_or_default();
    Ok(StatusReport {
        application: app.name_any(),
        namespace: namespace.to_string(),
        observed_at: second(Timestamp::now()).to_string(),
        created: app
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| second(t.0).to_string()),
        generation: app.metadata.generation,
        observed_generation: status.observed_generation,
        phase: status.status,
        revision: RevisionReport {
            latest: status.latest_revision,
            kept,
        },
        conditions: status.conditions,
        components: status.services,
        workflow: status.workflow,
        grants,
        events,
    })
}

fn second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// What a refused optional read leaves in the report.
fn unreadable<T>(e: &kube::Error) -> Readable<T> {
    let unreadable = match e {
        kube::Error::Api(s) if s.code == 403 => "not visible to you".to_string(),
        kube::Error::Api(s) if s.code == 404 => "not served by this cluster".to_string(),
        other => format!("unreadable: {other}"),
    };
    Readable::Unreadable { unreadable }
}

async fn revisions_kept(client: &Client, namespace: &str, app: &str) -> Readable<usize> {
    let selector = format!("{}={app}", names::LABEL_APP_NAME);
    match Api::<ApplicationRevision>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => Readable::Read(list.items.len()),
        Err(e) => unreadable(&e),
    }
}

/// One report per declaration: its name from the same function the controller names objects with,
/// its state from the access conditions and the grant ServiceAccounts that exist.
async fn grants_of(client: &Client, app: &Application) -> Vec<GrantReport> {
    let decls = declarations(app);
    if decls.is_empty() {
        return Vec::new();
    }
    let namespace = names::namespace_of(app);
    let name = app.name_any();
    let selector = format!(
        "{},{}={name},{}={namespace}",
        names::LABEL_GRANT,
        names::LABEL_APP_NAME,
        names::LABEL_APP_NAMESPACE
    );
    let accounts: Option<BTreeSet<String>> =
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .ok()
            .map(|l| l.items.into_iter().map(|sa| sa.name_any()).collect());
    let issuances: Readable<Vec<TokenIssuance>> = match Api::<TokenIssuance>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => Readable::Read(
            list.items
                .into_iter()
                .filter(|r| r.spec.namespace == namespace && r.spec.application == name)
                .collect(),
        ),
        Err(e) => unreadable(&e),
    };
    let mut default_ttls: BTreeMap<String, Option<String>> = BTreeMap::new();
    for trust in decls.iter().filter_map(|d| d.trust()) {
        if !default_ttls.contains_key(trust) {
            default_ttls.insert(trust.to_string(), trust_default_ttl(client, trust).await);
        }
    }
    let conditions = app
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    decls
        .iter()
        .map(|d| {
            let service_account = object_name(&name, namespace, &d.slug, &d.id);
            let parsed: Option<GitLabAccess> = d
                .properties
                .and_then(|p| serde_json::from_value(p.clone()).ok());
            let declared_ttl = parsed.as_ref().and_then(|p| p.ttl.clone());
            let refusal = refusal_of(conditions, &d.id);
            let exists = accounts.as_ref().map(|a| a.contains(&service_account));
            let ready = condition_holds(conditions, ACCESS_READY);
            let state = match (&refusal, exists) {
                (Some(_), _) => REFUSED,
                (None, Some(true)) => GRANTED,
                (None, None) if ready => GRANTED,
                _ => PENDING,
            };
            GrantReport {
                grant: d.id.clone(),
                component: d.component.map(str::to_string),
                trust: d.trust().map(str::to_string),
                state: state.into(),
                message: refusal,
                last_issuance: match &issuances {
                    Readable::Read(records) => Readable::Read(newest(records, &service_account)),
                    Readable::Unreadable { unreadable } => Readable::Unreadable {
                        unreadable: unreadable.clone(),
                    },
                },
                service_account,
                access: parsed
                    .as_ref()
                    .map_or_else(|| "invalid".to_string(), |p| access_name(&p.access)),
                ttl_declared: declared_ttl.is_some(),
                ttl: declared_ttl.or_else(|| {
                    d.trust()
                        .and_then(|t| default_ttls.get(t).cloned().flatten())
                }),
            }
        })
        .collect()
}

/// The TTL a declaration without one gets from its trust; `None` when the trust is not readable.
async fn trust_default_ttl(client: &Client, trust: &str) -> Option<String> {
    let spec = Api::<GitLabTrust>::all(client.clone())
        .get(trust)
        .await
        .ok()?;
    let ttl = crate::access::grant::default_ttl(trust, &spec).ok()?;
    Some(crate::duration::format(ttl))
}

fn access_name(access: &Access) -> String {
    match access {
        Access::Preset(p) => serde_json::to_value(p)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        Access::Rules(r) => format!("rules ({})", r.rules.len()),
    }
}

fn condition_holds(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The refusal of declaration `id`, from `AccessDenied`'s message (`<id>: <reason>; …`).
fn refusal_of(conditions: &[Condition], id: &str) -> Option<String> {
    let denied = conditions
        .iter()
        .find(|c| c.type_ == ACCESS_DENIED && c.status == "True")?;
    let prefix = format!("{id}: ");
    denied
        .message
        .split("; ")
        .find_map(|part| part.strip_prefix(&prefix))
        .map(str::to_string)
}

fn newest(records: &[TokenIssuance], service_account: &str) -> Option<IssuanceReport> {
    records
        .iter()
        .filter(|r| r.spec.service_account == service_account)
        .max_by_key(|r| r.spec.issued_at.parse::<Timestamp>().ok())
        .map(|r| IssuanceReport {
            name: r.name_any(),
            issued_at: r.spec.issued_at.clone(),
            token_expires_at: r.spec.token_expires_at.clone(),
            job_id: r.spec.job_id.clone(),
            pipeline_id: r.spec.pipeline_id.clone(),
            project_path: r.spec.project_path.clone(),
            user: r.spec.user.clone(),
            ref_: r.spec.ref_.clone(),
        })
}

/// The Application's most recent `limit` Events, newest last: from `events.k8s.io/v1`, where the
/// controller's Recorder writes them, or from `core/v1` (the same objects) for a caller who may read
/// only those.
async fn events_of(client: &Client, app: &Application, limit: usize) -> Readable<Vec<EventReport>> {
    if limit == 0 {
        return Readable::Read(Vec::new());
    }
    let namespace = names::namespace_of(app);
    let uid = app.uid().unwrap_or_default();
    let modern = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("regarding.uid={uid}")))
        .await;
    let mut events: Vec<EventReport> = match modern {
        Ok(list) => list.items.into_iter().map(event_report).collect(),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            match Api::<CoreEvent>::namespaced(client.clone(), namespace)
                .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
                .await
            {
                Ok(list) => list.items.into_iter().map(core_event_report).collect(),
                Err(e) => return unreadable(&e),
            }
        }
        Err(e) => return unreadable(&e),
    };
    events.sort_by_key(|e| {
        e.last_seen
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
    });
    let skip = events.len().saturating_sub(limit);
    Readable::Read(events.split_off(skip))
}

fn event_report(e: Event) -> EventReport {
    let last_seen = e
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
    EventReport {
        last_seen: last_seen.map(|t| second(t).to_string()),
        type_: e.type_.unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
        message: e.note.unwrap_or_default(),
        count: e
            .series
            .as_ref()
            .map(|s| s.count)
            .or(e.deprecated_count)
            .unwrap_or(1),
    }
}

fn core_event_report(e: CoreEvent) -> EventReport {
    let series = e.series.as_ref();
    let last_seen = series
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
    EventReport {
        last_seen: last_seen.map(|t| second(t).to_string()),
        type_: e.type_.unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
        message: e.message.unwrap_or_default(),
        count: series.and_then(|s| s.count).or(e.count).unwrap_or(1),
    }
}

/// The report as a person reads it: header, components, workflow, grants, Events. Pure.
pub fn render_text(r: &StatusReport) -> String {
    let now: Option<Timestamp> = r.observed_at.parse().ok();
    let age = |t: &str| -> String {
        match (now, t.parse::<Timestamp>()) {
            (Some(now), Ok(t)) => human_age(now.as_second() - t.as_second()),
            _ => "?".into(),
        }
    };
    let mut out = String::new();
    let phase = r.phase.as_deref().unwrap_or("not reconciled yet");
    let behind = match (r.observed_generation, r.generation) {
        (Some(o), Some(g)) if o < g => {
            format!(" (as of generation {o}; generation {g} is not reconciled yet)")
        }
        _ => String::new(),
    };
    let revision = match (&r.revision.latest, &r.revision.kept) {
        (None, _) => "none".to_string(),
        (Some(l), Readable::Read(n)) => format!("{} ({n} kept)", l.name),
        (Some(l), Readable::Unreadable { .. }) => l.name.clone(),
    };
    let created = r
        .created
        .as_deref()
        .map_or_else(|| "-".into(), |c| format!("{c} ({} ago)", age(c)));
    let _ = writeln!(out, "Application: {}", r.application);
    let _ = writeln!(out, "Namespace:   {}", r.namespace);
    let _ = writeln!(out, "Phase:       {phase}{behind}");
    let _ = writeln!(out, "Revision:    {revision}");
    let _ = writeln!(out, "Created:     {created}");
    conditions_text(&mut out, &r.conditions);

    out.push_str("\nComponents\n");
    if r.components.is_empty() {
        out.push_str("  none reported yet\n");
    } else {
        let rows = r.components.iter().map(|c| {
            let traits: Vec<String> = c
                .traits
                .iter()
                .map(|t| match (t.healthy, &t.message) {
                    (true, _) => t.type_.clone(),
                    (false, Some(m)) => format!("{} (unhealthy: {m})", t.type_),
                    (false, None) => format!("{} (unhealthy)", t.type_),
                })
                .collect();
            vec![
                c.name.clone(),
                c.namespace.clone().unwrap_or_else(|| r.namespace.clone()),
                yes_no(c.healthy).into(),
                dash(&traits.join(", ")),
                dash(c.message.as_deref().unwrap_or_default()),
            ]
        });
        table(
            &mut out,
            &["NAME", "NAMESPACE", "HEALTHY", "TRAITS", "MESSAGE"],
            rows,
        );
    }

    out.push_str("\nWorkflow\n");
    match &r.workflow {
        None => out.push_str("  default workflow: every component applied\n"),
        Some(w) => workflow_text(&mut out, w, r),
    }

    out.push_str("\nGrants\n");
    if r.grants.is_empty() {
        out.push_str("  none: the Application declares no gitlab-access\n");
    } else {
        let rows = r.grants.iter().map(|g| {
            let ttl = match (&g.ttl, g.ttl_declared) {
                (Some(t), true) => t.clone(),
                (Some(t), false) => format!("{t} (trust default)"),
                (None, _) => "trust default".into(),
            };
            let last = match &g.last_issuance {
                Readable::Unreadable { unreadable } => unreadable.clone(),
                Readable::Read(None) => "none".into(),
                Readable::Read(Some(i)) => issuance_text(i, now, &age),
            };
            vec![
                g.grant.clone(),
                // A refused declaration has no ServiceAccount (`-o json` still names the one it would get).
                if g.state == REFUSED {
                    "-".into()
                } else {
                    g.service_account.clone()
                },
                g.access.clone(),
                ttl,
                g.state.clone(),
                last,
            ]
        });
        table(
            &mut out,
            &[
                "GRANT",
                "SERVICEACCOUNT",
                "ACCESS",
                "TTL",
                "STATE",
                "LAST ISSUANCE",
            ],
            rows,
        );
        for g in &r.grants {
            if let Some(m) = &g.message {
                let _ = writeln!(out, "  {} {}: {m}", g.grant, g.state);
            }
        }
    }

    match &r.events {
        Readable::Unreadable { unreadable } => {
            let _ = writeln!(out, "\nEvents: {unreadable}");
        }
        Readable::Read(events) if events.is_empty() => out.push_str("\nEvents: none\n"),
        Readable::Read(events) => {
            let _ = writeln!(out, "\nEvents (newest last)");
            let rows = events.iter().map(|e| {
                let when = e.last_seen.as_deref().map_or_else(|| "?".into(), &age);
                vec![
                    if e.count > 1 {
                        format!("{when} (x{})", e.count)
                    } else {
                        when
                    },
                    e.type_.clone(),
                    e.reason.clone(),
                    one_line(&e.message),
                ]
            });
            table(&mut out, &["AGE", "TYPE", "REASON", "MESSAGE"], rows);
        }
    }
    out
}

/// The conditions in their good state on one line; each other one with its reason and message.
fn conditions_text(out: &mut String, conditions: &[Condition]) {
    // These say something is wrong when True; left out when False (AccessReady says the same).
    let inverted = [ACCESS_DENIED, ACCESS_WARNING, ACCESS_UNENFORCEABLE];
    if conditions.is_empty() {
        return;
    }
    // In the order a reconcile reaches them; others after, as written.
    let rank = |c: &Condition| {
        ["Parsed", "Applied", "Healthy"]
            .iter()
            .chain(CONDITION_TYPES.iter())
            .position(|t| *t == c.type_)
            .unwrap_or(usize::MAX)
    };
    let mut conditions: Vec<&Condition> = conditions.iter().collect();
    conditions.sort_by_key(|c| rank(c));
    let good: Vec<&str> = conditions
        .iter()
        .filter(|c| c.status == "True" && !inverted.contains(&c.type_.as_str()))
        .map(|c| c.type_.as_str())
        .collect();
    let _ = writeln!(
        out,
        "Conditions:  {}",
        match good.len() {
            0 => String::new(),
            1 => format!("{} is True", good[0]),
            _ => format!("{} are True", good.join(", ")),
        }
        .trim_end()
    );
    let bad = conditions.iter().filter(|c| {
        if inverted.contains(&c.type_.as_str()) {
            c.status != "False"
        } else {
            c.status != "True"
        }
    });
    for c in bad {
        let _ = writeln!(
            out,
            "  {}={} ({}): {}",
            c.type_,
            c.status,
            c.reason,
            one_line(&c.message)
        );
    }
}

fn workflow_text(out: &mut String, w: &WorkflowStatus, r: &StatusReport) {
    let _ = writeln!(
        out,
        "  phase {}, mode {}{}",
        w.status.as_deref().unwrap_or("-"),
        w.mode.as_deref().unwrap_or("-"),
        w.app_revision
            .as_deref()
            .map(|rev| format!(", revision {rev}"))
            .unwrap_or_default()
    );
    if w.suspend {
        // In place of the engine's message, which names no Application or namespace.
        let waiting = crate::resume::suspending_steps_of(w);
        let at = match waiting.len() {
            0 => String::new(),
            1 => format!(" at step {}", waiting[0]),
            _ => format!(" at steps {}", waiting.join(", ")),
        };
        let _ = writeln!(
            out,
            "  SUSPENDED{at}: resume with `oam-trust resume {} -n {}`",
            r.application, r.namespace
        );
    } else if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = writeln!(out, "  {}", one_line(m));
    }
    if w.terminated {
        out.push_str("  terminated\n");
    }
    let mut rows = Vec::new();
    fn step_rows(steps: &[WorkflowStepStatus], depth: usize, rows: &mut Vec<Vec<String>>) {
        for s in steps {
            let detail = [s.reason.as_deref(), s.message.as_deref()]
                .into_iter()
                .flatten()
                .filter(|d| !d.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            rows.push(vec![
                format!("{}{}", "  ".repeat(depth), s.name),
                s.type_.clone(),
                s.phase.clone(),
                dash(&detail),
            ]);
            step_rows(&s.sub_steps, depth + 1, rows);
        }
    }
    step_rows(&w.steps, 0, &mut rows);
    if rows.is_empty() {
        out.push_str("  no step has started\n");
    } else {
        table(out, &["STEP", "TYPE", "PHASE", "DETAIL"], rows.into_iter());
    }
}

fn issuance_text(
    i: &IssuanceReport,
    now: Option<Timestamp>,
    age: &dyn Fn(&str) -> String,
) -> String {
    let mut who = Vec::new();
    if !i.job_id.is_empty() {
        who.push(format!("job {}", i.job_id));
    }
    if !i.user.is_empty() {
        who.push(format!("by {}", i.user));
    }
    let who = if who.is_empty() {
        i.name.clone()
    } else {
        who.join(" ")
    };
    let expired = match (now, i.token_expires_at.parse::<Timestamp>()) {
        (Some(now), Ok(end)) if end <= now => " (token expired)",
        _ => "",
    };
    format!("{who}, {} ago{expired}", age(&i.issued_at))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        one_line(s)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `kubectl`'s short ages: `45s`, `12m`, `5h`, `3d`.
fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Rows under a header, columns aligned, two spaces apart, indented by two; the last column unpadded.
fn table(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &all {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &all {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            line.push(' ');
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$} ", width = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(value: serde_json::Value) -> StatusReport {
        serde_json::from_value(value).expect("a StatusReport")
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-05-01T10:00:00Z"})
    }

    fn healthy() -> StatusReport {
        report(serde_json::json!({
            "application": "shop-api", "namespace": "shop",
            "observedAt": "2026-05-01T12:00:00Z", "created": "2026-05-01T10:00:00Z",
            "generation": 2, "observedGeneration": 2, "phase": "running",
            "revision": {"latest": {"name": "shop-api-v2", "revision": 2, "revisionHash": "5f2c"}, "kept": 2},
            // As the API server keeps them after server-side apply: by type.
            "conditions": [
                condition("AccessDenied", "False", "AllGranted", "every gitlab-access declaration is granted"),
                condition("AccessReady", "True", "Granted", "policy/readers -> ServiceAccount oam-shop-api-readers-0123456789abcdef0123 (read, ttl 10m)"),
                condition("Applied", "True", "Applied", "applied 4 objects"),
                condition("Healthy", "True", "Healthy", "every component is healthy"),
                condition("Parsed", "True", "Parsed", "parsed"),
            ],
            "components": [
                {"name": "api", "namespace": "shop", "healthy": true, "message": "Ready:2/2",
                 "traits": [{"type": "scaler", "healthy": true}, {"type": "expose", "healthy": true}]},
                {"name": "worker", "healthy": true, "message": "Ready:1/1"}
            ],
            "grants": [
                {"grant": "policy/readers", "trust": "gitlab-com", "state": "granted",
                 "serviceAccount": "oam-shop-api-readers-0123456789abcdef0123", "access": "read",
                 "ttl": "10m", "ttlDeclared": true,
                 "lastIssuance": {"name": "tki-1", "issuedAt": "2026-05-01T11:55:00Z",
                    "tokenExpiresAt": "2026-05-01T12:05:00Z", "jobId": "4711", "pipelineId": "99",
                    "projectPath": "shop/api", "user": "alice", "ref": "main"}},
                {"grant": "policy/nightly", "trust": "gitlab-com", "state": "granted",
                 "serviceAccount": "oam-shop-api-nightly-0123456789abcdef0123", "access": "rules (2)",
                 "ttl": "15m", "ttlDeclared": true,
                 "lastIssuance": {"name": "tki-2", "issuedAt": "2026-05-01T11:30:00Z",
                    "tokenExpiresAt": "2026-05-01T11:45:00Z", "jobId": "4700"}},
                {"grant": "component/api/trait/0", "component": "api", "trust": "gitlab-com",
                 "state": "granted", "serviceAccount": "oam-shop-api-api-0-0123456789abcdef0123",
                 "access": "deploy", "ttl": "15m", "ttlDeclared": false, "lastIssuance": null}
            ],
            "events": [
                {"lastSeen": "2026-05-01T11:00:00Z", "type": "Normal", "reason": "Pruned",
                 "message": "deleted 1 objects no longer rendered", "count": 1}
            ]
        }))
    }

    fn unhealthy() -> StatusReport {
        report(serde_json::json!({
            "application": "greedy", "namespace": "shop",
            "observedAt": "2026-05-01T10:03:00Z", "created": "2026-05-01T10:00:00Z",
            "generation": 3, "observedGeneration": 2, "phase": "unhealthy",
            "revision": {"latest": {"name": "greedy-v2", "revision": 2}, "kept": {"unreadable": "not visible to you"}},
            "conditions": [
                condition("Parsed", "True", "Parsed", "parsed"),
                condition("Applied", "True", "Applied", "applied 2 objects"),
                condition("Healthy", "False", "ComponentsUnhealthy", "greedy: Ready:0/1 (pods cannot be scheduled)"),
                condition("AccessReady", "False", "DeclarationRefused", "1 of 1 declarations refused; granted: none"),
                condition("AccessDenied", "True", "TtlAboveMax", "policy/ci: ttl 2h is above GitLabTrust \"gitlab-com\"'s maxTTL 1h"),
            ],
            "components": [
                {"name": "greedy", "namespace": "shop", "healthy": false,
                 "message": "Ready:0/1 (pods cannot be scheduled: 0/2 nodes are available: 2 Insufficient cpu.)",
                 "traits": [{"type": "expose", "healthy": false, "message": "no endpoints"}]}
            ],
            "grants": [
                {"grant": "policy/ci", "trust": "gitlab-com", "state": "refused",
                 "message": "ttl 2h is above GitLabTrust \"gitlab-com\"'s maxTTL 1h",
                 "serviceAccount": "oam-greedy-ci-0123456789abcdef0123", "access": "deploy",
                 "ttl": "2h", "ttlDeclared": true, "lastIssuance": {"unreadable": "not visible to you"}}
            ],
            "events": [
                {"lastSeen": "2026-05-01T10:01:00Z", "type": "Warning", "reason": "ApplyFailed",
                 "message": "applying Deployment \"greedy\":\n forbidden", "count": 3},
                {"lastSeen": "2026-05-01T10:02:30Z", "type": "Normal", "reason": "Pruned",
                 "message": "deleted 1 objects no longer rendered", "count": 1}
            ]
        }))
    }

    fn suspended() -> StatusReport {
        report(serde_json::json!({
            "application": "release", "namespace": "shop",
            "observedAt": "2026-05-01T10:10:00Z", "created": "2026-05-01T10:00:00Z",
            "generation": 1, "observedGeneration": 1, "phase": "workflowSuspending",
            "revision": {"latest": {"name": "release-v1", "revision": 1}, "kept": 1},
            "components": [{"name": "web", "namespace": "shop", "healthy": true, "message": "Ready:1/1"}],
            "workflow": {"appRevision": "release-v1", "mode": "StepByStep-DAG", "status": "suspending",
                "message": "suspended at step approve", "suspend": true, "terminated": false, "finished": false,
                "steps": [
                    {"id": "deploy", "name": "deploy", "type": "deploy", "phase": "succeeded",
                     "firstExecuteTime": "2026-05-01T10:00:05Z"},
                    {"id": "approve", "name": "approve", "type": "suspend", "phase": "suspending",
                     "reason": "Suspended", "message": "waiting until resumed"},
                    {"id": "rollout", "name": "rollout", "type": "step-group", "phase": "pending",
                     "subSteps": [{"id": "a", "name": "canary", "type": "apply-component", "phase": "pending"}]}
                ]},
            "grants": [],
            "events": {"unreadable": "not visible to you"}
        }))
    }

    #[test]
    fn healthy_report() {
        insta::assert_snapshot!(render_text(&healthy()));
    }

    #[test]
    fn unhealthy_report() {
        insta::assert_snapshot!(render_text(&unhealthy()));
    }

    #[test]
    fn suspended_report() {
        let text = render_text(&suspended());
        assert!(
            text.contains(
                "SUSPENDED at step approve: resume with `oam-trust resume release -n shop`"
            ),
            "{text}"
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn reports_survive_json_and_yaml() {
        for r in [healthy(), unhealthy(), suspended()] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), r);
            let yaml = serde_yaml_ng::to_string(&r).unwrap();
            assert_eq!(serde_yaml_ng::from_str::<StatusReport>(&yaml).unwrap(), r);
        }
    }

    #[test]
    fn a_refusal_is_found_by_its_declaration_only() {
        let c: Condition = serde_json::from_value(condition(
            "AccessDenied",
            "True",
            "TtlAboveMax",
            "policy/ci: ttl too long; policy/ci2: trust \"x\" not found",
        ))
        .unwrap();
        let conditions = [c];
        assert_eq!(
            refusal_of(&conditions, "policy/ci").as_deref(),
            Some("ttl too long")
        );
        assert_eq!(
            refusal_of(&conditions, "policy/ci2").as_deref(),
            Some("trust \"x\" not found")
        );
        assert_eq!(refusal_of(&conditions, "policy/c"), None);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(
            [0, 59, 119, 120, 7199, 7200, 172_799, 172_800, -5].map(human_age),
            ["0s", "59s", "119s", "2m", "119m", "2h", "47h", "2d", "0s"]
        );
    }
}
