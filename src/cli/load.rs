//! Reading `Topic` and `ConsumerGroup` objects from multi-document YAML files, with errors that
//! name the file, the object and the field.

use std::io::Read;

use serde::Deserialize;

use crate::api::{API_VERSION, ConsumerGroup, GROUP, Topic};

/// The kinds `plan` reads.
const KINDS: [&str; 2] = ["Topic", "ConsumerGroup"];

/// Objects found in the input files.
#[derive(Default, Debug)]
pub struct Loaded {
    /// Topics, with the file they came from.
    pub topics: Vec<(String, Topic)>,
    /// Consumer groups, with the file they came from.
    pub groups: Vec<(String, ConsumerGroup)>,
}

/// A load error: one line, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LoadError {
    /// File name (`-` for stdin).
    pub file: String,
    /// What went wrong.
    pub message: String,
}

/// The text of a file, or of stdin for `-`.
pub fn read_source(path: &str) -> Result<String, LoadError> {
    let err = |message: String| LoadError {
        file: path.to_string(),
        message,
    };
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| err(format!("cannot read stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))
    }
}

/// Loads every file; other kinds (Deployments in a quickstart, say) are skipped, but an unknown
/// kind in our own API group (a typo such as `Topick`) is an error.
pub fn load_files(paths: &[String]) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    for path in paths {
        let text = read_source(path)?;
        load_text(path, &text, &mut loaded)?;
    }
    Ok(loaded)
}

/// Loads one file's text.
pub fn load_text(file: &str, text: &str, loaded: &mut Loaded) -> Result<(), LoadError> {
    let err = |message: String| LoadError {
        file: file.to_string(),
        message,
    };
    super::nesting::check(text).map_err(err)?;
    for (n, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| err(format!("document {}: malformed YAML: {e}", n + 1)))?;
        if value.is_null() {
            continue;
        }
        load_value(file, n + 1, value, loaded)?;
    }
    Ok(())
}

fn load_value(
    file: &str,
    doc: usize,
    value: serde_yaml::Value,
    loaded: &mut Loaded,
) -> Result<(), LoadError> {
    let err = |message: String| LoadError {
        file: file.to_string(),
        message,
    };
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let kind = text("kind").ok_or_else(|| {
        err(format!(
            "document {doc}: kind: missing (is this a Kubernetes object?)"
        ))
    })?;
    let api_version = text("apiVersion").unwrap_or_default();
    // Our API group, any version.
    let ours = api_version.split('/').next() == Some(GROUP);
    // `kubectl get -o yaml` gives a `List`; the API itself a `TopicList` / `ConsumerGroupList`.
    if kind == "List" || (ours && KINDS.iter().any(|k| kind == format!("{k}List"))) {
        if let Some(items) = value.get("items").and_then(|i| i.as_sequence()) {
            for item in items.clone() {
                load_value(file, doc, item, loaded)?;
            }
        }
        return Ok(());
    }
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let what = format!(
        "document {doc} ({kind} {})",
        name.as_deref().unwrap_or("<unnamed>")
    );
    if !KINDS.contains(&kind.as_str()) {
        if !ours {
            return Ok(());
        }
        let hint = match closest_kind(&kind) {
            Some(k) => format!("; did you mean {k}?"),
            None => String::new(),
        };
        return Err(err(format!(
            "{what}: kind: {kind:?} is not a kind of {api_version} (expected Topic or ConsumerGroup{hint})"
        )));
    }
    if api_version != API_VERSION {
        return Err(err(format!(
            "{what}: apiVersion: {api_version:?}, expected {API_VERSION}"
        )));
    }
    if name.is_none() {
        return Err(err(format!("{what}: metadata.name: missing")));
    }
    let field_error = |e: serde_path_to_error::Error<serde_yaml::Error>| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_yaml appends a location that means nothing once we have the path.
        let inner = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        err(format!("{what}: {path}: {inner}"))
    };
    match kind.as_str() {
        "Topic" => {
            let topic: Topic = serde_path_to_error::deserialize(value).map_err(field_error)?;
            loaded.topics.push((file.to_string(), topic));
        }
        _ => {
            let group: ConsumerGroup =
                serde_path_to_error::deserialize(value).map_err(field_error)?;
            loaded.groups.push((file.to_string(), group));
        }
    }
    Ok(())
}

/// The known kind a typo most likely meant: at most two edits away, ignoring case.
fn closest_kind(kind: &str) -> Option<&'static str> {
    let kind = kind.to_ascii_lowercase();
    KINDS
        .iter()
        .map(|k| (edit_distance(&kind, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, LoadError> {
        let mut l = Loaded::default();
        load_text("f.yaml", text, &mut l).map(|_| l)
    }

    #[test]
    fn negative_count_names_file_object_and_field() {
        let e = load(
            "apiVersion: rebalancer.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec:\n  brokers:\n  - {name: a, readQueues: -1, writeQueues: 4}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("f.yaml: document 1 (Topic orders): spec.brokers[0].readQueues: "),
            "{e}"
        );
        assert!(e.contains("-1"), "{e}");
    }

    #[test]
    fn skips_other_kinds_and_reads_lists() {
        let l = load(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\nkind: List\nitems:\n- apiVersion: rebalancer.dev/v1alpha1\n  kind: Topic\n  metadata: {name: t}\n  spec: {brokers: [{name: a, readQueues: 1, writeQueues: 1}]}\n",
        )
        .unwrap();
        assert_eq!(l.topics.len(), 1);
        assert!(l.groups.is_empty());
    }

    #[test]
    fn malformed_yaml_is_one_line() {
        let e = load("kind: [").unwrap_err().to_string();
        assert!(e.starts_with("f.yaml: document 1: malformed YAML"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn unknown_kind_of_our_group_names_the_kind() {
        let e = load(
            "apiVersion: rebalancer.dev/v1alpha1\nkind: Topick\nmetadata: {name: orders}\nspec: {brokers: []}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "f.yaml: document 1 (Topick orders): kind: \"Topick\" is not a kind of rebalancer.dev/v1alpha1 (expected Topic or ConsumerGroup; did you mean Topic?)"
        );
        // Any version of the group, and no hint when nothing is close.
        let e = load("apiVersion: rebalancer.dev/v2\nkind: Widget\nmetadata: {name: w}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "f.yaml: document 1 (Widget w): kind: \"Widget\" is not a kind of rebalancer.dev/v2 (expected Topic or ConsumerGroup)"
        );
        let e =
            load("apiVersion: rebalancer.dev/v1alpha1\nkind: consumergroup\nmetadata: {name: g}\n")
                .unwrap_err()
                .to_string();
        assert!(e.ends_with("did you mean ConsumerGroup?)"), "{e}");
    }

    #[test]
    fn other_groups_and_typed_lists() {
        // A similar-looking group is not ours: skipped, as every other kind is.
        let l = load(
            "apiVersion: rebalancer.dev.example/v1\nkind: Topick\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Topick\nmetadata: {name: y}\n",
        )
        .unwrap();
        assert!(l.topics.is_empty() && l.groups.is_empty());
        let l = load(
            "apiVersion: rebalancer.dev/v1alpha1\nkind: TopicList\nitems:\n- apiVersion: rebalancer.dev/v1alpha1\n  kind: Topic\n  metadata: {name: t}\n  spec: {brokers: [{name: a, readQueues: 1, writeQueues: 1}]}\n",
        )
        .unwrap();
        assert_eq!(l.topics.len(), 1);
    }

    #[test]
    fn kind_distance() {
        assert_eq!(edit_distance("topick", "topic"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest_kind("Topics"), Some("Topic"));
        assert_eq!(closest_kind("ConsumerGrup"), Some("ConsumerGroup"));
        assert_eq!(closest_kind("Deployment"), None);
    }

    #[test]
    fn wrong_api_version_is_rejected() {
        let e = load("apiVersion: v1\nkind: Topic\nmetadata: {name: t}\nspec: {brokers: []}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion"), "{e}");
    }
}
