//! CreateDocument, UpdateDocument, GetDocument, DescribeDocument, DeleteDocument and
//! ListDocuments: the account's Session documents (above all `SSM-SessionManagerRunShell`,
//! which holds the Session Manager preferences) and, read-only, the AWS-owned session
//! documents the broker runs.
//!
//! Only `Session` documents in JSON are kept; their content is checked by
//! [`crate::preferences::parse_document`]. A document's default version is always its latest:
//! in SSM, Session Manager's preferences are changed with `update-document --document-version
//! '$LATEST'` and take effect at once, and this broker has no UpdateDocumentDefaultVersion.

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::documents_builtin::BUILTINS;
use super::{check_tags, document_arn, paginate, parse, ApiError, Op, Tag};
use crate::app::now_us;
use crate::authz::Gate;
use crate::preferences::{
    parse_document, PreferencesError, SessionDocument, SessionType, PREFERENCES_DOCUMENT, SCHEMA_VERSION,
};
use crate::store::{DocumentVersion, NewVersion, Store, VersionRefusal};

/// SSM's limit on a document's content.
const MAX_CONTENT: usize = 64 * 1024;
const SESSION: &str = "Session";
/// Run Command documents (schema 2.2, `aws:runShellScript` steps).
pub(super) const COMMAND: &str = "Command";
const JSON_FORMAT: &str = "JSON";
const PLATFORMS: [&str; 2] = ["Linux", "MacOS"];
/// The owner SSM shows for its own documents.
const AMAZON: &str = "Amazon";
/// CreatedDate of the built-in documents (2024-01-01T00:00:00Z).
const BUILTIN_CREATED_US: i64 = 1_704_067_200_000_000;

/// CreateDocument's input (`VersionName`, `DisplayName`, `TargetType`, … are refused as unknown
/// members: this broker keeps none of them).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct CreateDocument {
    content: String,
    name: String,
    document_type: Option<String>,
    document_format: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// UpdateDocument's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct UpdateDocument {
    content: String,
    name: String,
    document_version: Option<String>,
    document_format: Option<String>,
}

/// The input of GetDocument, DescribeDocument and DeleteDocument.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct NamedDocument {
    name: String,
    document_version: Option<String>,
    version_name: Option<String>,
    document_format: Option<String>,
}

/// A `Filters` entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct KeyValues {
    key: String,
    #[serde(default)]
    values: Vec<String>,
}

/// A `DocumentFilterList` entry (deprecated in SSM; lower-case member names).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OldFilter {
    key: String,
    value: String,
}

/// ListDocuments' input.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub(super) struct ListDocuments {
    filters: Vec<KeyValues>,
    document_filter_list: Vec<OldFilter>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// Decides whether the caller may act on a document: the [`Gate`] (tests put their own in).
trait Authorize {
    /// `op` on the document `name` (`None`: `*`), whose latest version is `existing`, with
    /// the tags the request sets.
    async fn authorize(
        &self,
        op: Op,
        name: Option<&str>,
        existing: Option<&DocumentVersion>,
        request_tags: &[Tag],
    ) -> Result<(), ApiError>;
}

impl Authorize for Gate<'_> {
    /// The document's tags are `ssm:resourceTag/…` and `aws:ResourceTag/…`; the request's
    /// `aws:RequestTag/…` and `aws:TagKeys`.
    async fn authorize(
        &self,
        op: Op,
        name: Option<&str>,
        existing: Option<&DocumentVersion>,
        request_tags: &[Tag],
    ) -> Result<(), ApiError> {
        let mut ctx = self.context();
        for (k, v) in existing.map(|d| d.tags.as_slice()).unwrap_or_default() {
            ctx.insert(&format!("ssm:resourceTag/{k}"), v.clone())
                .insert(&format!("aws:ResourceTag/{k}"), v.clone());
        }
        if !request_tags.is_empty() {
            ctx.insert_multi("aws:TagKeys", request_tags.iter().map(|t| t.key.clone()).collect::<Vec<_>>());
        }
        for t in request_tags {
            ctx.insert(&format!("aws:RequestTag/{}", t.key), t.value.clone());
        }
        let resource = name.map(|n| document_arn(self.app, n)).unwrap_or_else(|| "*".to_owned());
        self.require_in(&ctx, op, &resource).await
    }
}

/// What the operations work on: the store, and the account that owns its documents.
struct Docs<'a> {
    store: &'a dyn Store,
    account: &'a str,
}

/// Runs one of the document operations.
pub(super) async fn dispatch(gate: &Gate<'_>, op: Op, body: &[u8]) -> Result<Value, ApiError> {
    let docs = Docs { store: gate.app.store.as_ref(), account: &gate.app.settings.account };
    run(gate, &docs, op, body).await
}

async fn run(auth: &impl Authorize, docs: &Docs<'_>, op: Op, body: &[u8]) -> Result<Value, ApiError> {
    match op {
        Op::CreateDocument => create(auth, docs, parse(body)?).await,
        Op::UpdateDocument => update(auth, docs, parse(body)?).await,
        Op::GetDocument => get(auth, docs, parse(body)?).await,
        Op::DescribeDocument => describe(auth, docs, parse(body)?).await,
        Op::DeleteDocument => delete(auth, docs, parse(body)?).await,
        Op::ListDocuments => list(auth, docs, parse(body)?).await,
        other => Err(ApiError::bad(
            "UnknownOperationException",
            format!("{} is not a document operation", other.name()),
        )),
    }
}

fn sha256_hex(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

fn builtin(name: &str) -> Option<DocumentVersion> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(name, content)| DocumentVersion {
        name: (*name).to_owned(),
        version: 1,
        content: (*content).to_owned(),
        document_format: JSON_FORMAT.to_owned(),
        document_type: SESSION.to_owned(),
        created_us: BUILTIN_CREATED_US,
        sha256: sha256_hex(content),
        tags: Vec::new(),
    })
}

/// A document name (or a document ARN, whose last part is the name), checked against SSM's
/// pattern.
fn document_name(raw: &str) -> Result<String, ApiError> {
    let name = if raw.starts_with("arn:") { raw.rsplit('/').next().unwrap_or(raw) } else { raw };
    let valid = (3..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !valid {
        return Err(ApiError::bad(
            "ValidationException",
            format!("Name {raw:?} must satisfy the pattern ^[a-zA-Z0-9_\\-.]{{3,128}}$"),
        ));
    }
    Ok(name.to_owned())
}

/// Refuses to change an Amazon-owned document, or to create one with a name SSM reserves.
fn refuse_amazon(name: &str, change: &str) -> Result<(), ApiError> {
    if builtin(name).is_some() {
        return Err(ApiError::bad(
            "InvalidDocumentOperation",
            format!("{name} is owned by Amazon and cannot be {change}: AWS- documents are read-only"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if ["aws", "amazon", "amzn"].iter().any(|p| lower.starts_with(p)) {
        return Err(ApiError::bad(
            "InvalidDocumentOperation",
            format!(
                "{name} cannot be {change}: names starting with \"aws\", \"amazon\" or \"amzn\" are reserved \
                 for Amazon-owned documents"
            ),
        ));
    }
    Ok(())
}

/// A requested version: `None` for `$LATEST`/`$DEFAULT` (the same here) or absent.
fn version_arg(v: Option<&str>) -> Result<Option<i64>, ApiError> {
    match v {
        None | Some("$LATEST") | Some("$DEFAULT") => Ok(None),
        Some(v) => version_number(v).map(Some),
    }
}

fn version_number(v: &str) -> Result<i64, ApiError> {
    v.parse::<i64>().ok().filter(|n| *n >= 1 && !v.starts_with(['0', '+'])).ok_or_else(|| {
        ApiError::bad(
            "InvalidDocumentVersion",
            format!("DocumentVersion {v:?} is not valid: use a version number, $LATEST or $DEFAULT"),
        )
    })
}

fn not_found(name: &str) -> ApiError {
    ApiError::bad("InvalidDocument", format!("Document {name} does not exist."))
}

fn no_such_version(name: &str, v: i64) -> ApiError {
    ApiError::bad("InvalidDocumentVersion", format!("Document {name} has no version {v}."))
}

fn duplicate(name: &str, latest: i64) -> ApiError {
    let message =
        format!("The content is the same as version {latest} of {name}. Change the content and try again.");
    ApiError::bad("DuplicateDocumentContent", message)
}

/// Checks a document's content and format; returns it parsed.
fn check_content(name: &str, content: &str, format: Option<&str>) -> Result<SessionDocument, ApiError> {
    let bad = |m: String| ApiError::bad("InvalidDocumentContent", m);
    if content.len() > MAX_CONTENT {
        return Err(ApiError::bad(
            "MaxDocumentSizeExceeded",
            format!("The content is {} bytes; documents are limited to {MAX_CONTENT} bytes.", content.len()),
        ));
    }
    match format.unwrap_or(JSON_FORMAT) {
        JSON_FORMAT => {}
        "YAML" => return Err(bad("YAML documents are not supported; send JSON".into())),
        other => return Err(bad(format!("DocumentFormat {other} is not supported; send JSON"))),
    }
    let parsed = parse_document(content).map_err(|e| match e {
        PreferencesError::Json(_) if !content.trim_start().starts_with(['{', '[']) => {
            bad(format!("YAML documents are not supported; send JSON ({e})"))
        }
        e => ApiError::bad(e.code(), e.to_string()),
    })?;
    if name == PREFERENCES_DOCUMENT && parsed.session_type != SessionType::StandardStream {
        return Err(bad(format!(
            "sessionType: {PREFERENCES_DOCUMENT} holds the Session Manager preferences and must be Standard_Stream"
        )));
    }
    Ok(parsed)
}

/// Checks content as its document type wants it: Session documents as Session Manager's,
/// Command documents as Run Command's (schema 2.2).
fn check_typed(name: &str, document_type: &str, content: &str, format: Option<&str>) -> Result<(), ApiError> {
    if document_type != COMMAND {
        return check_content(name, content, format).map(|_| ());
    }
    if content.len() > MAX_CONTENT {
        return Err(ApiError::bad(
            "MaxDocumentSizeExceeded",
            format!("documents are limited to {MAX_CONTENT} bytes"),
        ));
    }
    if format.is_some_and(|f| f != JSON_FORMAT) {
        return Err(ApiError::bad("InvalidDocumentContent", "send JSON documents"));
    }
    crate::run_command::document::parse(content).map(|_| ()).map_err(ApiError::from)
}

fn tags_json(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag { key: k.clone(), value: v.clone() }).collect()
}

impl Docs<'_> {
    fn owner(&self, amazon: bool) -> &str {
        if amazon {
            AMAZON
        } else {
            self.account
        }
    }

    /// SSM's `DocumentDescription` of version `v` of a document whose latest version is
    /// `latest`.
    fn description(&self, v: &DocumentVersion, latest: i64, amazon: bool) -> Value {
        // Stored versions were checked when written; one that no longer parses still describes.
        let parsed = parse_document(&v.content).ok();
        let parameters: Vec<Value> = parsed
            .iter()
            .flat_map(|d| d.parameters.iter())
            .map(|p| {
                let mut e = json!({ "Name": p.name, "Type": p.kind, "Description": p.description });
                if let Some(d) = &p.default {
                    e["DefaultValue"] = json!(d);
                }
                e
            })
            .collect();
        let mut out = json!({
            "Hash": v.sha256,
            "HashType": "Sha256",
            "Name": v.name,
            "Owner": self.owner(amazon),
            "CreatedDate": v.created_us / 1_000_000,
            "Status": "Active",
            "DocumentVersion": v.version.to_string(),
            "Description": parsed.as_ref().map(|d| d.description.as_str()).unwrap_or_default(),
            "Parameters": parameters,
            "PlatformTypes": PLATFORMS,
            "DocumentType": v.document_type,
            "SchemaVersion": SCHEMA_VERSION,
            "LatestVersion": latest.to_string(),
            // Session documents: the default version follows the latest (see the module comment).
            "DefaultVersion": latest.to_string(),
            "DocumentFormat": v.document_format,
            "Tags": tags_json(&v.tags),
        });
        if v.document_type == COMMAND {
            let command = crate::run_command::document::parse(&v.content).ok();
            out["SchemaVersion"] = json!(crate::run_command::document::SCHEMA);
            out["Description"] = json!(command.as_ref().map(|d| d.description.as_str()).unwrap_or_default());
            out["Parameters"] = json!(command.map(|d| d.parameters_json()).unwrap_or_default());
        }
        out
    }

    /// The latest version of a document, built-ins included, and whether Amazon owns it.
    async fn latest(&self, name: &str) -> Result<Option<(DocumentVersion, bool)>, ApiError> {
        if let Some(b) = builtin(name) {
            return Ok(Some((b, true)));
        }
        Ok(self.store.document(name, None).await?.map(|d| (d, false)))
    }

    /// The version a Get or Describe asks for, once the caller is authorized: that version,
    /// the latest version number, and whether Amazon owns the document.
    async fn requested(
        &self,
        name: &str,
        current: Option<(DocumentVersion, bool)>,
        req: &NamedDocument,
    ) -> Result<(DocumentVersion, i64, bool), ApiError> {
        let want = version_arg(req.document_version.as_deref())?;
        let Some((latest, amazon)) = current else { return Err(not_found(name)) };
        if let Some(v) = &req.version_name {
            return Err(ApiError::bad(
                "InvalidDocumentVersion",
                format!("{name} has no version named {v:?}."),
            ));
        }
        let n = latest.version;
        match want {
            None => Ok((latest, n, amazon)),
            Some(v) if v == n => Ok((latest, n, amazon)),
            Some(v) if amazon || v > n => Err(no_such_version(name, v)),
            Some(v) => match self.store.document(name, Some(v)).await? {
                Some(doc) => Ok((doc, n, amazon)),
                None => Err(no_such_version(name, v)),
            },
        }
    }
}

/// Creates a Session document as version 1.
async fn create(auth: &impl Authorize, docs: &Docs<'_>, req: CreateDocument) -> Result<Value, ApiError> {
    let name = document_name(&req.name)?;
    check_tags(&req.tags)?;
    auth.authorize(Op::CreateDocument, Some(&name), None, &req.tags).await?;
    refuse_amazon(&name, "created")?;
    let document_type = match req.document_type.as_deref() {
        Some(SESSION) => SESSION,
        // Absent is SSM's default: Command.
        None | Some(COMMAND) => COMMAND,
        other => {
            return Err(ApiError::bad(
                "InvalidDocumentType",
                format!(
                    "DocumentType {}: this broker keeps Session and Command documents",
                    other.unwrap_or_default()
                ),
            ))
        }
    };
    if name == PREFERENCES_DOCUMENT && document_type != SESSION {
        return Err(ApiError::bad(
            "InvalidDocumentType",
            format!(
                "DocumentType {}: {PREFERENCES_DOCUMENT} holds the Session Manager preferences; send DocumentType Session",
                req.document_type.as_deref().unwrap_or("absent (SSM's default is Command)")
            ),
        ));
    }
    check_typed(&name, document_type, &req.content, req.document_format.as_deref())?;
    let doc = DocumentVersion {
        sha256: sha256_hex(&req.content),
        name,
        version: 1,
        content: req.content,
        document_format: JSON_FORMAT.to_owned(),
        document_type: document_type.to_owned(),
        created_us: now_us(),
        tags: req.tags.into_iter().map(|t| (t.key, t.value)).collect(),
    };
    if !docs.store.create_document(&doc).await? {
        return Err(ApiError::bad(
            "DocumentAlreadyExists",
            format!("Document with same name {} already exists.", doc.name),
        ));
    }
    tracing::info!(document = %doc.name, "document created");
    Ok(json!({ "DocumentDescription": docs.description(&doc, 1, false) }))
}

/// Adds a version to a document; only the latest version can be updated, as in SSM.
async fn update(auth: &impl Authorize, docs: &Docs<'_>, req: UpdateDocument) -> Result<Value, ApiError> {
    let name = document_name(&req.name)?;
    let current = docs.latest(&name).await?;
    auth.authorize(Op::UpdateDocument, Some(&name), current.as_ref().map(|c| &c.0), &[]).await?;
    refuse_amazon(&name, "updated")?;
    let expected = match req.document_version.as_deref() {
        None | Some("$LATEST") => None,
        Some(v) => Some(version_number(v)?),
    };
    let Some((current, _)) = current else { return Err(not_found(&name)) };
    let not_latest = |latest: i64| {
        ApiError::bad(
            "InvalidDocumentVersion",
            format!("Only the latest version ({latest}) of {name} can be updated: pass $LATEST or {latest}."),
        )
    };
    if let Some(v) = expected.filter(|v| *v != current.version) {
        return Err(if v > current.version {
            no_such_version(&name, v)
        } else {
            not_latest(current.version)
        });
    }
    check_typed(&name, &current.document_type, &req.content, req.document_format.as_deref())?;
    let new = NewVersion {
        sha256: sha256_hex(&req.content),
        content: req.content,
        document_format: JSON_FORMAT.to_owned(),
        created_us: now_us(),
        expected_latest: expected,
    };
    let added = match docs.store.add_document_version(&name, &new).await? {
        Ok(v) => v,
        Err(VersionRefusal::NotFound) => return Err(not_found(&name)),
        Err(VersionRefusal::NotLatest { latest }) => return Err(not_latest(latest)),
        Err(VersionRefusal::SameContent { latest }) => return Err(duplicate(&name, latest)),
    };
    tracing::info!(document = %name, version = added.version, "document updated");
    Ok(json!({ "DocumentDescription": docs.description(&added, added.version, false) }))
}

/// A document's content.
async fn get(auth: &impl Authorize, docs: &Docs<'_>, req: NamedDocument) -> Result<Value, ApiError> {
    let name = document_name(&req.name)?;
    let current = docs.latest(&name).await?;
    auth.authorize(Op::GetDocument, Some(&name), current.as_ref().map(|c| &c.0), &[]).await?;
    if let Some(f) = req.document_format.as_deref().filter(|f| *f != JSON_FORMAT) {
        return Err(ApiError::bad(
            "ValidationException",
            format!("DocumentFormat {f} is not supported: documents are kept as JSON"),
        ));
    }
    let (v, _, _) = docs.requested(&name, current, &req).await?;
    Ok(json!({
        "Name": v.name,
        "CreatedDate": v.created_us / 1_000_000,
        "DocumentVersion": v.version.to_string(),
        "Status": "Active",
        "Content": v.content,
        "DocumentType": v.document_type,
        "DocumentFormat": v.document_format,
    }))
}

/// A document's description.
async fn describe(auth: &impl Authorize, docs: &Docs<'_>, req: NamedDocument) -> Result<Value, ApiError> {
    let name = document_name(&req.name)?;
    let current = docs.latest(&name).await?;
    auth.authorize(Op::DescribeDocument, Some(&name), current.as_ref().map(|c| &c.0), &[]).await?;
    let (v, n, amazon) = docs.requested(&name, current, &req).await?;
    Ok(json!({ "Document": docs.description(&v, n, amazon) }))
}

/// Deletes a document with all its versions (deleting `SSM-SessionManagerRunShell` brings
/// back the default preferences).
async fn delete(auth: &impl Authorize, docs: &Docs<'_>, req: NamedDocument) -> Result<Value, ApiError> {
    let name = document_name(&req.name)?;
    let current = docs.latest(&name).await?;
    auth.authorize(Op::DeleteDocument, Some(&name), current.as_ref().map(|c| &c.0), &[]).await?;
    refuse_amazon(&name, "deleted")?;
    if req.document_version.is_some() || req.version_name.is_some() {
        return Err(ApiError::bad(
            "InvalidDocumentOperation",
            "Deleting one version is not supported (the default version is always the latest): \
             DeleteDocument without DocumentVersion deletes the document",
        ));
    }
    if !docs.store.delete_document(&name).await? {
        return Err(not_found(&name));
    }
    tracing::info!(document = %name, "document deleted");
    Ok(json!({}))
}

/// One listed document.
struct Listed {
    name: String,
    version: i64,
    created_us: i64,
    amazon: bool,
    document_format: String,
    document_type: String,
    tags: Vec<(String, String)>,
}

const FILTER_KEYS: [&str; 5] = ["Name", "Owner", "DocumentType", "PlatformTypes", "SchemaVersion"];

fn keep(docs: &Docs<'_>, d: &Listed, key: &str, values: &[String]) -> bool {
    let any = |have: &str| values.iter().any(|v| v == have);
    match key {
        "Name" => values.iter().any(|v| d.name.starts_with(v.as_str())),
        "Owner" => values.iter().any(|v| match v.as_str() {
            "Self" | "Private" => !d.amazon,
            "Amazon" => d.amazon,
            "All" => true,
            other => other == docs.owner(d.amazon),
        }),
        "DocumentType" => any(&d.document_type),
        "PlatformTypes" => PLATFORMS.iter().any(|p| any(p)),
        "SchemaVersion" => any(SCHEMA_VERSION),
        tag => match tag.strip_prefix("tag:") {
            Some(k) => d.tags.iter().any(|(tk, tv)| tk == k && (values.is_empty() || any(tv))),
            None => false,
        },
    }
}

/// Lists documents by name: the account's and the AWS-owned ones.
async fn list(auth: &impl Authorize, docs: &Docs<'_>, req: ListDocuments) -> Result<Value, ApiError> {
    auth.authorize(Op::ListDocuments, None, None, &[]).await?;
    let max = req.max_results.unwrap_or(50);
    if !(1..=50).contains(&max) {
        return Err(ApiError::bad("ValidationException", "MaxResults must be between 1 and 50"));
    }
    let filters: Vec<(String, Vec<String>)> = req
        .filters
        .into_iter()
        .map(|f| (f.key, f.values))
        .chain(req.document_filter_list.into_iter().map(|f| (f.key, vec![f.value])))
        .collect();
    // Checked up front, so a bad key is an error even when nothing would be listed.
    if let Some((k, _)) =
        filters.iter().find(|(k, _)| !FILTER_KEYS.contains(&k.as_str()) && !k.starts_with("tag:"))
    {
        return Err(ApiError::bad(
            "InvalidFilterKey",
            format!("filter key {k} is not supported (use {} or tag:<key>)", FILTER_KEYS.join(", ")),
        ));
    }
    let mut all: Vec<Listed> = BUILTINS
        .iter()
        .filter_map(|(n, _)| builtin(n))
        .map(|b| Listed {
            name: b.name,
            version: b.version,
            created_us: b.created_us,
            amazon: true,
            document_format: b.document_format,
            document_type: b.document_type,
            tags: b.tags,
        })
        .collect();
    all.extend(docs.store.documents().await?.into_iter().map(|d| Listed {
        name: d.name,
        version: d.latest_version,
        created_us: d.created_us,
        amazon: false,
        document_format: d.document_format,
        document_type: d.document_type,
        tags: d.tags,
    }));
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all.retain(|d| filters.iter().all(|(k, values)| keep(docs, d, k, values)));
    let (page, next) = paginate(all, max, req.next_token.as_deref())?;
    let identifiers: Vec<Value> = page
        .iter()
        .map(|d| {
            json!({
                "Name": d.name,
                "CreatedDate": d.created_us / 1_000_000,
                "Owner": docs.owner(d.amazon),
                "DocumentVersion": d.version.to_string(),
                "DocumentType": d.document_type,
                "SchemaVersion": SCHEMA_VERSION,
                "DocumentFormat": d.document_format,
                "PlatformTypes": PLATFORMS,
                "Tags": tags_json(&d.tags),
            })
        })
        .collect();
    let mut out = json!({ "DocumentIdentifiers": identifiers });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "documents_tests.rs"]
mod tests;
