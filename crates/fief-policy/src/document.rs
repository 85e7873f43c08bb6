//! Tenant-written Cedar documents: parsed, re-identified and validated
//! against the platform schema at write time, with errors that point at a
//! line and column of the text the tenant sent.

use std::str::FromStr;

use cedar_policy::{Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use serde::Serialize;

/// Longest policy document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Most statements in one document.
pub const MAX_STATEMENTS: usize = 100;
/// Deepest bracket nesting, and most operators in one statement. Cedar's
/// parser, validator and evaluator recurse over the expression tree, so an
/// unbounded tree would let one tenant overflow a server thread's stack
/// (found by the hostile-input catalogue: 1,000 nested parentheses aborted
/// the process). Real policies stay far below both.
pub const MAX_NESTING: usize = 32;
pub const MAX_OPERATORS: usize = 128;

/// One problem in a document, located in its text (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct DocumentErrors(pub Vec<Problem>);

fn render(errors: &[Problem]) -> String {
    errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses `text` as one or more Cedar policies and validates them strictly.
/// Each statement gets the id `{prefix}` (one statement) or `{prefix}#{n}`
/// (n from 1), so decisions name the document and the statement.
pub fn parse(schema: &Schema, prefix: &str, text: &str) -> Result<Vec<Policy>, DocumentErrors> {
    let at_start = |message: String| {
        DocumentErrors(vec![Problem {
            line: 1,
            column: 1,
            message,
        }])
    };
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(at_start(format!(
            "a policy document may hold at most {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    check_complexity(text).map_err(|p| DocumentErrors(vec![p]))?;
    let parsed = PolicySet::from_str(text).map_err(|e| DocumentErrors(located(text, &e)))?;
    if parsed.templates().next().is_some() {
        return Err(at_start(
            "templates (`?principal`, `?resource`) are not supported; write the entity out".into(),
        ));
    }
    let statements: Vec<&Policy> = parsed.policies().collect();
    if statements.is_empty() {
        return Err(at_start("the document holds no policy".into()));
    }
    if statements.len() > MAX_STATEMENTS {
        return Err(at_start(format!(
            "a document may hold at most {MAX_STATEMENTS} policies"
        )));
    }
    // Cedar names parsed statements policy0, policy1, … in source order.
    let mut ordered: Vec<(usize, &Policy)> = statements
        .into_iter()
        .map(|p| {
            let n = p
                .id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(0);
            (n, p)
        })
        .collect();
    ordered.sort_by_key(|(n, _)| *n);
    let single = ordered.len() == 1;
    let policies: Vec<Policy> = ordered
        .iter()
        .enumerate()
        .map(|(i, (_, p))| {
            let id = if single {
                prefix.to_owned()
            } else {
                format!("{prefix}#{}", i + 1)
            };
            p.new_id(PolicyId::new(id))
        })
        .collect();
    let mut set = PolicySet::new();
    for p in &policies {
        set.add(p.clone())
            .map_err(|e| at_start(format!("duplicate policy: {e}")))?;
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    let errors: Vec<Problem> = result
        .validation_errors()
        .flat_map(|e| located(text, e))
        .collect();
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(DocumentErrors(errors))
    }
}

/// Turns a Cedar diagnostic into located messages (one per label, or one at
/// the start when it has none).
fn located(text: &str, d: &(dyn Diagnostic + 'static)) -> Vec<Problem> {
    // A parse error is a collection of related diagnostics; report each.
    let related: Vec<&dyn Diagnostic> = d.related().map(|r| r.collect()).unwrap_or_default();
    if !related.is_empty() {
        return related
            .into_iter()
            .flat_map(|r| one(text, r, &r.to_string()))
            .collect();
    }
    one(text, d, &d.to_string())
}

fn one(text: &str, d: &dyn Diagnostic, message: &str) -> Vec<Problem> {
    let help = d.help().map(|h| format!(" ({h})")).unwrap_or_default();
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset())
        .unwrap_or(0);
    let (line, column) = line_column(text, offset);
    vec![Problem {
        line,
        column,
        message: format!("{message}{help}"),
    }]
}

/// Refuses text whose expression trees could be deep, before Cedar sees it:
/// bracket nesting beyond [`MAX_NESTING`], or more than [`MAX_OPERATORS`]
/// operator characters (and `if`s) in one statement. Strings and comments
/// are skipped.
fn check_complexity(text: &str) -> Result<(), Problem> {
    let problem = |offset: usize, message: String| {
        let (line, column) = line_column(text, offset);
        Problem {
            line,
            column,
            message,
        }
    };
    let bytes = text.as_bytes();
    let (mut depth, mut operators, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string literal, honouring escapes.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(problem(
                        i,
                        format!("brackets nest deeper than {MAX_NESTING} levels"),
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => operators = 0,
            b'!' | b'-' | b'+' | b'*' | b'<' | b'>' | b'=' | b'&' | b'|' | b'.' => operators += 1,
            b'i' if bytes.get(i + 1) == Some(&b'f')
                && !bytes
                    .get(i + 2)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) =>
            {
                operators += 1
            }
            _ => {}
        }
        if operators > MAX_OPERATORS {
            return Err(problem(
                i,
                format!("a policy may hold at most {MAX_OPERATORS} operators; split it up"),
            ));
        }
        i += 1;
    }
    Ok(())
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::from_cedarschema_str(crate::SCHEMA).unwrap().0
    }

    #[test]
    fn statements_get_document_ids() {
        let p = parse(
            &schema(),
            "policy/p",
            "permit(principal, action, resource);\nforbid(principal, action, resource) when { false };",
        )
        .unwrap();
        let ids: Vec<String> = p.iter().map(|p| p.id().to_string()).collect();
        assert_eq!(ids, ["policy/p#1", "policy/p#2"]);
        let p = parse(
            &schema(),
            "policy/q",
            "permit(principal, action, resource);",
        )
        .unwrap();
        assert_eq!(p[0].id().to_string(), "policy/q");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = parse(
            &schema(),
            "p",
            "permit(principal, action, resource);\npermit(principal, action, resource) when { principal.tenant == };",
        )
        .unwrap_err();
        assert_eq!(e.0[0].line, 2, "{e}");
        assert!(e.0[0].column > 1, "{e}");
    }

    #[test]
    fn schema_errors_name_line_and_column() {
        let e = parse(
            &schema(),
            "p",
            "permit(principal, action, resource)\n  when { resource.department == \"HR\" };",
        )
        .unwrap_err();
        assert_eq!(e.0[0].line, 2, "{e}");
        assert!(e.to_string().contains("department"), "{e}");
        let e = parse(
            &schema(),
            "p",
            "permit(principal is Fief::Nobody, action, resource);",
        )
        .unwrap_err();
        assert!(e.to_string().contains("Nobody"), "{e}");
    }

    #[test]
    fn templates_and_empty_documents_are_refused() {
        assert!(parse(&schema(), "p", "").is_err());
        assert!(parse(
            &schema(),
            "p",
            "permit(principal == ?principal, action, resource);"
        )
        .is_err());
    }

    /// Deep expressions are refused before Cedar recurses over them; the
    /// deepest accepted ones validate and evaluate on a 2 MB test thread.
    #[test]
    fn deep_expressions_are_refused_and_the_limits_are_safe() {
        let policy = |expr: String| {
            format!("permit (principal is Fief::User, action, resource) when {{ {expr} }};")
        };
        for deep in [
            format!("{}true{}", "(".repeat(1000), ")".repeat(1000)),
            format!("{}1 > 0", "1 + ".repeat(5000)),
            format!("{}true", "if true then ".repeat(200)) + &" else false".repeat(200),
        ] {
            let e = parse(&schema(), "p", &policy(deep)).unwrap_err();
            assert!(
                e.to_string().contains("nest deeper") || e.to_string().contains("operators"),
                "{e}"
            );
        }
        // Strings and comments do not count.
        let text = format!(
            "// {}\npermit (principal, action, resource) when {{ \"{}\" == \"x\" }};",
            "(".repeat(500),
            "+".repeat(500)
        );
        assert!(parse(&schema(), "p", &text).is_ok());
        // The worst accepted shape, evaluated for real.
        let worst = policy(format!(
            "{}{}1 > 0{}",
            "(".repeat(MAX_NESTING - 1),
            "1 + ".repeat(MAX_OPERATORS - 1),
            ")".repeat(MAX_NESTING - 1)
        ));
        parse(&schema(), "p", &worst).unwrap();
        let engine = crate::PolicyEngine::new().unwrap();
        let compiled = engine
            .compile_tenant(&crate::TenantDocuments {
                policies: vec![("p".into(), worst)],
                roles: Vec::new(),
            })
            .unwrap();
        let t = fief_core::TenantId::parse("aa").unwrap();
        let inc = fief_core::Incarnation::from_random([0; 16]);
        engine.install(&t, &inc, 0, compiled);
        let user = crate::PrincipalFacts::User {
            subject: "s".into(),
            tenant: t.clone(),
            incarnation: inc,
            tags: Default::default(),
        };
        assert!(
            engine
                .authorize(
                    &user,
                    crate::Action::ListModels,
                    &crate::Resource::Tenant(t)
                )
                .allowed
        );
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("abc", 0), (1, 1));
    }
}
