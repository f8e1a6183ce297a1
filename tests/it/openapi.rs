//! Discord's OpenAPI document (`../shared/specs/discord/openapi.json`, read
//! once per test binary) and a small validator for the part of OpenAPI 3.1
//! (JSON Schema 2020-12) it uses, so the fake Discord can refuse what Discord
//! would: a path no template matches, a method the path does not have, a
//! path parameter, query parameter or JSON body its schema does not allow.
//!
//! Checked: `$ref` (local pointers), `type` (one or a list; `integer` is a
//! whole number), `enum`, `const`, `properties`, `required`,
//! `additionalProperties` (a schema or `false`), `items`, `minItems`,
//! `maxItems`, `uniqueItems`, `minLength`, `maxLength` (in characters),
//! `minimum`, `maximum`, `minProperties`, `maxProperties`, `oneOf` (exactly
//! one), `anyOf`, `allOf`, `pattern` (the two patterns the document has) and
//! `format` (`snowflake`: a string of digits or a non-negative integer;
//! `int32` and `int64` ranges; `date-time`; `uri`). `title`, `description`,
//! `contentEncoding`, `x-discord-union` and the `double` and `nonce` formats
//! are annotations. Any other keyword panics, so a new document cannot make
//! the check pass by being misunderstood.
//!
//! One rule is stricter than JSON Schema: an object schema that lists
//! `properties` and says nothing of `additionalProperties` is closed. Only
//! one of the document's 444 object schemas sets it to `false`, and Discord
//! itself ignores fields it does not know, so without this a misspelt field
//! (`allowed_mention`) would pass here and be dropped silently there.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// The keywords `check` validates.
const CHECKED: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minProperties",
    "maxProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "pattern",
    "format",
];
/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["title", "description", "contentEncoding", "x-discord-union"];
const FORMATS: &[&str] = &[
    "snowflake",
    "int32",
    "int64",
    "date-time",
    "uri",
    "double",
    "nonce",
];
const SNOWFLAKE_PATTERN: &str = "^(0|[1-9][0-9]*)$";
const COLOR_PATTERN: &str = "^#(([0-9a-fA-F]{2}){3}|([0-9a-fA-F]){3})$";
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// One thing a request got wrong, where Discord's errors would put it.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Field names and array indexes from the top of the body (or the
    /// parameter's name).
    pub path: Vec<String>,
    pub code: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(path: &[String], code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_vec(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.path.is_empty() {
            "(body)".to_string()
        } else {
            self.path.join(".")
        };
        write!(f, "{at}: {} {}", self.code, self.message)
    }
}

/// Problems as the `errors` of Discord's 50035 "Invalid Form Body":
/// `{"embeds": {"0": {"title": {"_errors": [{"code", "message"}]}}}}`.
pub fn errors_json(problems: &[Problem]) -> Value {
    let mut errors = Value::Object(Map::new());
    for p in problems {
        let mut at = &mut errors;
        for key in &p.path {
            at = at
                .as_object_mut()
                .unwrap()
                .entry(key.clone())
                .or_insert_with(|| json!({}));
        }
        let list = at
            .as_object_mut()
            .unwrap()
            .entry("_errors")
            .or_insert_with(|| json!([]));
        list.as_array_mut()
            .unwrap()
            .push(json!({"code": p.code, "message": p.message}));
    }
    errors
}

enum Segment {
    Literal(String),
    Param(String),
}

struct Template {
    text: String,
    segments: Vec<Segment>,
}

/// An OpenAPI document with its path templates split for matching.
pub struct Document {
    root: Value,
    templates: Vec<Template>,
}

/// What a method and path come to.
pub enum Route<'a> {
    Found(Operation<'a>),
    NoSuchPath,
    /// The path is the document's, the method is not.
    NoSuchMethod(&'a str),
}

/// One operation of the document, with the path parameters a request gave.
pub struct Operation<'a> {
    doc: &'a Document,
    pub template: &'a str,
    pub id: &'a str,
    op: &'a Value,
    path_item: &'a Value,
    /// Path parameters by name, as the request's path gave them.
    pub params: BTreeMap<&'a str, String>,
}

/// Discord's document, loaded and parsed once.
pub fn discord() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/specs/discord/openapi.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Document::new(serde_json::from_str(&text).expect("Discord's OpenAPI document is JSON"))
    })
}

impl Document {
    pub fn new(root: Value) -> Document {
        let templates = root["paths"]
            .as_object()
            .expect("an OpenAPI document has paths")
            .keys()
            .map(|text| Template {
                text: text.clone(),
                segments: text
                    .trim_start_matches('/')
                    .split('/')
                    .map(
                        |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                            Some(name) => Segment::Param(name.to_string()),
                            None => Segment::Literal(s.to_string()),
                        },
                    )
                    .collect(),
            })
            .collect();
        Document { root, templates }
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The operation for `method` on `path` (without the API's base, e.g.
    /// `/channels/1/messages`). Where several templates match, the one with
    /// the most literal segments wins (`/users/@me` over `/users/{user_id}`).
    pub fn route(&self, method: &str, path: &str) -> Route<'_> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let best = self
            .templates
            .iter()
            .filter(|t| {
                t.segments.len() == parts.len()
                    && t.segments.iter().zip(&parts).all(|(s, p)| match s {
                        Segment::Literal(l) => l == p,
                        Segment::Param(_) => !p.is_empty(),
                    })
            })
            .max_by_key(|t| {
                t.segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count()
            });
        let Some(template) = best else {
            return Route::NoSuchPath;
        };
        let path_item = &self.root["paths"][&template.text];
        let method = method.to_ascii_lowercase();
        let Some(op) = path_item
            .get(&method)
            .filter(|_| METHODS.contains(&&*method))
        else {
            return Route::NoSuchMethod(&template.text);
        };
        let params = template
            .segments
            .iter()
            .zip(&parts)
            .filter_map(|(s, p)| match s {
                Segment::Param(name) => Some((name.as_str(), p.to_string())),
                Segment::Literal(_) => None,
            })
            .collect();
        Route::Found(Operation {
            doc: self,
            template: &template.text,
            id: op["operationId"].as_str().unwrap_or("?"),
            op,
            path_item,
            params,
        })
    }

    fn pointer(&self, reference: &str) -> &Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are handled, not {reference}"));
        self.root
            .pointer(pointer)
            .unwrap_or_else(|| panic!("a $ref to nothing: {reference}"))
    }

    /// A schema or parameter with its `$ref`s followed.
    fn target<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => self.target(self.pointer(r)),
            None => schema,
        }
    }

    /// `value` against `schema` (a schema of this document).
    pub fn validate(&self, schema: &Value, value: &Value) -> Vec<Problem> {
        let mut out = Vec::new();
        self.check(schema, value, &mut Vec::new(), &[], &mut out);
        out
    }

    /// The property names a schema declares, through `$ref` and `allOf`:
    /// what an `allOf` of object schemas allows in all.
    fn declared<'a>(&'a self, schema: &'a Value, names: &mut Vec<&'a str>) {
        if let Some(r) = schema["$ref"].as_str() {
            self.declared(self.pointer(r), names);
        }
        if let Some(props) = schema["properties"].as_object() {
            names.extend(props.keys().map(String::as_str));
        }
        for branch in schema["allOf"].as_array().into_iter().flatten() {
            self.declared(branch, names);
        }
    }

    /// `known`: property names an enclosing `allOf` declares elsewhere.
    fn check<'a>(
        &'a self,
        schema: &'a Value,
        value: &Value,
        path: &mut Vec<String>,
        known: &[&'a str],
        out: &mut Vec<Problem>,
    ) {
        let s = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(Problem::new(
                    path,
                    "NOT_ALLOWED",
                    "Nothing is allowed here.",
                ));
                return;
            }
            Value::Object(s) => s,
            other => panic!("not a schema: {other}"),
        };
        for k in s.keys() {
            assert!(
                CHECKED.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()),
                "the validator does not handle the keyword `{k}` (at {path:?})"
            );
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            self.check(self.pointer(r), value, path, known, out);
        }
        let format = s.get("format").and_then(Value::as_str);
        if let Some(f) = format {
            assert!(
                FORMATS.contains(&f),
                "the validator does not know format `{f}`"
            );
        }
        if format == Some("snowflake") {
            let ok = match value {
                Value::String(v) => digits_without_leading_zero(v),
                Value::Number(n) => n.is_u64(),
                _ => false,
            };
            if !ok {
                out.push(Problem::new(
                    path,
                    "NUMBER_TYPE_COERCE",
                    format!("Value {value} is not snowflake."),
                ));
            }
            return;
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                other => panic!("a type is a name or a list: {other}"),
            };
            if !types.iter().any(|t| has_type(value, t)) {
                out.push(type_problem(path, &types, value));
                return;
            }
        }
        if let Some(choices) = s.get("enum").and_then(Value::as_array) {
            if !choices.iter().any(|c| same(c, value)) {
                out.push(choices_problem(path, choices));
            }
        }
        if let Some(c) = s.get("const") {
            if !same(c, value) {
                out.push(choices_problem(path, std::slice::from_ref(c)));
            }
        }
        let limit = |k: &str| s.get(k).and_then(Value::as_u64).map(|n| n as usize);
        let sizes = |n: usize, out: &mut Vec<Problem>, min: &str, max: &str| {
            if let Some(max) = limit(max).filter(|max| n > *max) {
                out.push(Problem::new(
                    path,
                    "BASE_TYPE_MAX_LENGTH",
                    format!("Must be {max} or fewer in length."),
                ));
            }
            if let Some(min) = limit(min).filter(|min| n < *min) {
                out.push(Problem::new(
                    path,
                    "BASE_TYPE_MIN_LENGTH",
                    format!("Must be {min} or more in length."),
                ));
            }
        };
        match value {
            Value::String(text) => {
                sizes(text.chars().count(), out, "minLength", "maxLength");
                if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
                    let ok = match pattern {
                        SNOWFLAKE_PATTERN => digits_without_leading_zero(text),
                        COLOR_PATTERN => hex_color(text),
                        other => panic!("the validator does not handle the pattern {other}"),
                    };
                    if !ok {
                        out.push(Problem::new(
                            path,
                            "STRING_TYPE_REGEX",
                            format!("String value did not match validation regex {pattern}."),
                        ));
                    }
                }
                match format {
                    Some("date-time") if chrono::DateTime::parse_from_rfc3339(text).is_err() => out
                        .push(Problem::new(
                            path,
                            "DATE_TYPE_PARSE",
                            format!("Could not parse {text:?}. Should be ISO8601."),
                        )),
                    Some("uri") if !has_scheme(text) => out.push(Problem::new(
                        path,
                        "URL_TYPE_INVALID_URL",
                        "Not a well formed URL.",
                    )),
                    _ => {}
                }
            }
            Value::Number(_) => {
                let (lo, hi) = match format {
                    Some("int32") => (Some(json!(i32::MIN)), Some(json!(i32::MAX))),
                    Some("int64") => (Some(json!(i64::MIN)), Some(json!(i64::MAX))),
                    _ => (None, None),
                };
                for (bound, code, word) in [
                    (s.get("maximum").cloned().or(hi), "NUMBER_TYPE_MAX", "less"),
                    (
                        s.get("minimum").cloned().or(lo),
                        "NUMBER_TYPE_MIN",
                        "greater",
                    ),
                ] {
                    let Some(bound) = bound else { continue };
                    let beyond = match compare(value, &bound) {
                        Some(std::cmp::Ordering::Greater) => word == "less",
                        Some(std::cmp::Ordering::Less) => word == "greater",
                        _ => false,
                    };
                    if beyond {
                        out.push(Problem::new(
                            path,
                            code,
                            format!("int value should be {word} than or equal to {bound}."),
                        ));
                    }
                }
            }
            Value::Array(items) => {
                sizes(items.len(), out, "minItems", "maxItems");
                if s.get("uniqueItems") == Some(&Value::Bool(true)) {
                    let repeated = items
                        .iter()
                        .enumerate()
                        .any(|(i, a)| items[..i].iter().any(|b| same(a, b)));
                    if repeated {
                        out.push(Problem::new(
                            path,
                            "ARRAY_TYPE_UNIQUE",
                            "Items must be unique.",
                        ));
                    }
                }
                if let Some(item) = s.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        path.push(i.to_string());
                        self.check(item, v, path, &[], out);
                        path.pop();
                    }
                }
            }
            Value::Object(fields) => {
                sizes(fields.len(), out, "minProperties", "maxProperties");
                let props = s.get("properties").and_then(Value::as_object);
                for name in s
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !fields.contains_key(name) {
                        path.push(name.to_string());
                        out.push(Problem::new(
                            path,
                            "BASE_TYPE_REQUIRED",
                            "This field is required",
                        ));
                        path.pop();
                    }
                }
                for (name, v) in fields {
                    path.push(name.clone());
                    match (
                        props.and_then(|p| p.get(name)),
                        s.get("additionalProperties"),
                    ) {
                        (Some(prop), _) => self.check(prop, v, path, &[], out),
                        _ if known.contains(&name.as_str()) => {}
                        (None, Some(extra @ Value::Object(_))) => {
                            self.check(extra, v, path, &[], out)
                        }
                        (None, Some(Value::Bool(true))) => {}
                        (None, None) if props.is_none() => {}
                        (None, _) => out.push(Problem::new(
                            path,
                            "UNKNOWN_FIELD",
                            "Discord's document has no such field here.",
                        )),
                    }
                    path.pop();
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            let mut names = known.to_vec();
            for branch in all {
                self.declared(branch, &mut names);
            }
            for branch in all {
                self.check(branch, value, path, &names, out);
            }
        }
        for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            let Some(branches) = s.get(keyword).and_then(Value::as_array) else {
                continue;
            };
            let results: Vec<Vec<Problem>> = branches
                .iter()
                .map(|b| {
                    let mut problems = Vec::new();
                    self.check(b, value, &mut path.clone(), known, &mut problems);
                    problems
                })
                .collect();
            let passed = results.iter().filter(|r| r.is_empty()).count();
            let consts: Option<Vec<Value>> = branches
                .iter()
                .map(|b| self.target(b).get("const").cloned())
                .collect();
            if passed == 0 {
                if let Some(consts) = consts {
                    // An enumeration written as a oneOf of titled constants.
                    out.push(choices_problem(path, &consts));
                    continue;
                }
                // The branch the value most looks like: the right type, then
                // the right discriminator (`type`), then not just `null`,
                // then the fewest problems.
                let depth = path.len();
                let rank = |b: &Value, r: &[Problem]| {
                    let mismatch = r
                        .iter()
                        .map(|p| {
                            let here = p.path.len() == depth;
                            if here
                                && (p.code.ends_with("_CONVERT") || p.code == "NUMBER_TYPE_COERCE")
                            {
                                2
                            } else if (here && p.code == "BASE_TYPE_CHOICES")
                                || (p.path.len() == depth + 1 && p.path[depth] == "type")
                            {
                                1
                            } else {
                                0
                            }
                        })
                        .max()
                        .unwrap_or(0);
                    (mismatch, self.target(b)["type"] == "null", r.len())
                };
                let best = branches
                    .iter()
                    .zip(results)
                    .min_by_key(|(b, r)| rank(b, r))
                    .map(|(_, r)| r)
                    .unwrap_or_default();
                out.extend(best);
            } else if exactly_one && passed > 1 {
                out.push(Problem::new(
                    path,
                    "UNION_TYPE_AMBIGUOUS",
                    format!("Matches {passed} of the schemas of a oneOf."),
                ));
            }
        }
    }
}

impl<'a> Operation<'a> {
    /// The path item's parameters and the operation's.
    fn parameters(&self) -> Vec<&'a Value> {
        [self.path_item, self.op]
            .into_iter()
            .flat_map(|v| v["parameters"].as_array().into_iter().flatten())
            .map(|p| self.doc.target(p))
            .collect()
    }

    /// The path parameters against their schemas.
    pub fn check_path(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for p in self.parameters().into_iter().filter(|p| p["in"] == "path") {
            let name = p["name"].as_str().unwrap_or_default();
            if let Some(given) = self.params.get(name) {
                self.doc.check(
                    &p["schema"],
                    &Value::String(given.clone()),
                    &mut vec![name.to_string()],
                    &[],
                    &mut out,
                );
            }
        }
        out
    }

    /// The query string (`a=1&b=x`) against the operation's query parameters:
    /// each known, each value allowed (read as JSON where it is not a string),
    /// the required ones there.
    pub fn check_query(&self, query: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let declared: Vec<&Value> = self
            .parameters()
            .into_iter()
            .filter(|p| p["in"] == "query")
            .collect();
        let given: Vec<(&str, &str)> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .collect();
        for (name, raw) in &given {
            let path = vec![name.to_string()];
            match declared.iter().find(|p| p["name"] == *name) {
                None => out.push(Problem::new(
                    &path,
                    "UNKNOWN_FIELD",
                    "Discord's document has no such query parameter here.",
                )),
                Some(p) => {
                    let value = serde_json::from_str::<Value>(raw)
                        .ok()
                        .filter(|v| !v.is_string())
                        .unwrap_or_else(|| Value::String(raw.to_string()));
                    let mut problems = self.doc.validate(&p["schema"], &value);
                    if !problems.is_empty() && !value.is_string() {
                        // "1" may be a string parameter's value too.
                        problems = self
                            .doc
                            .validate(&p["schema"], &Value::String(raw.to_string()));
                    }
                    out.extend(problems.into_iter().map(|mut q| {
                        q.path.insert(0, name.to_string());
                        q
                    }));
                }
            }
        }
        for p in declared.iter().filter(|p| p["required"] == true) {
            let name = p["name"].as_str().unwrap_or_default();
            if !given.iter().any(|(n, _)| *n == name) {
                out.push(Problem::new(
                    &[name.to_string()],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                ));
            }
        }
        out
    }

    /// Whether the operation wants a token: no `security` entry is empty.
    pub fn needs_auth(&self) -> bool {
        match self.op["security"].as_array() {
            Some(options) => !options
                .iter()
                .any(|o| o.as_object().is_some_and(Map::is_empty)),
            None => false,
        }
    }

    /// The status of the operation's success (its lowest 2xx response).
    pub fn success_status(&self) -> u16 {
        self.op["responses"]
            .as_object()
            .into_iter()
            .flat_map(|r| r.keys())
            .filter_map(|k| k.parse::<u16>().ok())
            .filter(|s| (200..300).contains(s))
            .min()
            .unwrap_or(200)
    }

    /// The JSON schema of the body for a content type, if the operation
    /// takes one of that type.
    pub fn body_schema(&self, content_type: &str) -> Option<&Value> {
        self.op["requestBody"]["content"]
            .get(content_type)
            .map(|c| &c["schema"])
    }

    /// A request's body: what it parsed to, and what is wrong with it.
    /// JSON is checked against the operation's schema; the bot sends no
    /// multipart bodies, and one would be refused as unchecked.
    pub fn check_body(&self, content_type: Option<&str>, body: &[u8]) -> (Value, Vec<Problem>) {
        let request_body = &self.op["requestBody"];
        if body.is_empty() {
            let problems = if request_body["required"] == true {
                vec![Problem::new(
                    &[],
                    "BASE_TYPE_REQUIRED",
                    "A body is required.",
                )]
            } else {
                vec![]
            };
            return (Value::Null, problems);
        }
        let media = content_type
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if request_body.is_null() {
            return (
                Value::Null,
                vec![Problem::new(
                    &[],
                    "UNEXPECTED_BODY",
                    "This operation takes no body.",
                )],
            );
        }
        if media != "application/json" {
            let why = if self.body_schema(&media).is_some() {
                format!("the fake checks JSON bodies only, not {media}")
            } else {
                format!("the operation takes no {media:?} body")
            };
            return (
                Value::Null,
                vec![Problem::new(&[], "CONTENT_TYPE_INVALID", why)],
            );
        }
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return (
                Value::Null,
                vec![Problem::new(
                    &[],
                    "JSON_INVALID",
                    "The request body contains invalid JSON.",
                )],
            );
        };
        let problems = match self.body_schema(&media) {
            Some(schema) => self.doc.validate(schema, &value),
            None => vec![Problem::new(
                &[],
                "CONTENT_TYPE_INVALID",
                "No JSON body here.",
            )],
        };
        (value, problems)
    }
}

fn digits_without_leading_zero(text: &str) -> bool {
    text == "0"
        || (!text.is_empty() && !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit()))
}

fn hex_color(text: &str) -> bool {
    text.strip_prefix('#')
        .is_some_and(|h| (h.len() == 6 || h.len() == 3) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn has_scheme(text: &str) -> bool {
    text.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("no JSON type {other}"),
    }
}

fn type_problem(path: &[String], types: &[&str], value: &Value) -> Problem {
    let wanted = types
        .iter()
        .find(|t| **t != "null")
        .copied()
        .unwrap_or("null");
    let (code, message) = match wanted {
        "string" => (
            "STRING_TYPE_CONVERT",
            format!("Could not interpret {value} as string."),
        ),
        "integer" => ("NUMBER_TYPE_COERCE", format!("Value {value} is not int.")),
        "number" => (
            "NUMBER_TYPE_COERCE",
            format!("Value {value} is not a number."),
        ),
        "boolean" => (
            "BOOLEAN_TYPE_CONVERT",
            format!("Could not interpret {value} as boolean."),
        ),
        "array" => (
            "LIST_TYPE_CONVERT",
            "Only iterables may be used in a ListType".into(),
        ),
        "object" => (
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType".into(),
        ),
        _ => ("BASE_TYPE_CONVERT", format!("Must be null, not {value}.")),
    };
    Problem::new(path, code, message)
}

fn choices_problem(path: &[String], choices: &[Value]) -> Problem {
    let list: Vec<String> = choices.iter().map(Value::to_string).collect();
    Problem::new(
        path,
        "BASE_TYPE_CHOICES",
        format!("Value must be one of ({}).", list.join(", ")),
    )
}

fn whole(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
}

/// Numbers by value (`1` and `1.0` alike), without losing big integers.
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (whole(a), whole(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b) == Some(std::cmp::Ordering::Equal),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    #[test]
    fn every_keyword_of_the_document_is_one_the_validator_knows() {
        fn walk(v: &Value, in_schema: bool, seen: &mut Vec<String>) {
            match v {
                Value::Object(m) if in_schema => {
                    for (k, sub) in m {
                        if !CHECKED.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
                            seen.push(k.clone());
                        }
                        match k.as_str() {
                            "properties" => sub
                                .as_object()
                                .into_iter()
                                .flat_map(|p| p.values())
                                .for_each(|p| walk(p, true, seen)),
                            "items" | "additionalProperties" => walk(sub, true, seen),
                            "oneOf" | "anyOf" | "allOf" => sub
                                .as_array()
                                .into_iter()
                                .flatten()
                                .for_each(|b| walk(b, true, seen)),
                            "format" => {
                                let f = sub.as_str().unwrap_or_default();
                                if !FORMATS.contains(&f) {
                                    seen.push(format!("format {f}"));
                                }
                            }
                            "pattern" => {
                                let p = sub.as_str().unwrap_or_default();
                                if p != SNOWFLAKE_PATTERN && p != COLOR_PATTERN {
                                    seen.push(format!("pattern {p}"));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Value::Object(m) => m.iter().for_each(|(k, sub)| walk(sub, k == "schema", seen)),
                Value::Array(a) => a.iter().for_each(|x| walk(x, in_schema, seen)),
                _ => {}
            }
        }
        let doc = discord();
        let mut unknown = Vec::new();
        for s in doc.root()["components"]["schemas"]
            .as_object()
            .unwrap()
            .values()
        {
            walk(s, true, &mut unknown);
        }
        walk(&doc.root()["paths"], false, &mut unknown);
        unknown.sort();
        unknown.dedup();
        assert_eq!(unknown, Vec::<String>::new());
    }

    #[test]
    fn routes_match_templates_literal_segments_first() {
        let doc = discord();
        let Route::Found(op) = doc.route("PATCH", "/channels/123/messages/456") else {
            panic!("no route")
        };
        assert_eq!(op.template, "/channels/{channel_id}/messages/{message_id}");
        assert_eq!(op.id, "update_message");
        assert_eq!(op.params["message_id"], "456");
        let Route::Found(op) = doc.route("POST", "/users/@me/channels") else {
            panic!("no route")
        };
        assert_eq!(op.id, "create_dm");
        assert!(matches!(
            doc.route("PUT", "/channels/1/messages/2"),
            Route::NoSuchMethod("/channels/{channel_id}/messages/{message_id}")
        ));
        assert!(matches!(
            doc.route("POST", "/channels/1/massages"),
            Route::NoSuchPath
        ));
        assert!(matches!(
            doc.route("GET", "/channels//messages"),
            Route::NoSuchPath
        ));
        let Route::Found(op) = doc.route("POST", "/channels/abc/messages") else {
            panic!("no route")
        };
        assert_eq!(op.check_path()[0].code, "NUMBER_TYPE_COERCE");
        let Route::Found(op) = doc.route("POST", "/interactions/1/tok/callback") else {
            panic!("no route")
        };
        assert!(!op.needs_auth());
        assert_eq!(op.success_status(), 200);
        assert_eq!(op.check_query("with_response=true"), vec![]);
        assert_eq!(op.check_query("wait=true")[0].code, "UNKNOWN_FIELD");
        let Route::Found(op) = doc.route("POST", "/channels/1/messages/2/threads") else {
            panic!("no route")
        };
        assert!(op.needs_auth());
        assert_eq!(op.success_status(), 201);
    }

    #[test]
    fn bodies_are_checked_against_their_schemas() {
        let doc = discord();
        let codes = |name: &str, v: Value| -> Vec<(String, &'static str)> {
            doc.validate(&schema(name), &v)
                .into_iter()
                .map(|p| (p.path.join("."), p.code))
                .collect()
        };
        let ok = json!({
            "content": null, "tts": false, "nonce": 12,
            "embeds": [{"title": "t", "description": "d", "footer": {"text": "f"}, "color": 255,
                        "timestamp": "2026-11-23T09:00:00Z", "url": "https://example.com/x"}],
            "allowed_mentions": {"parse": ["users"], "users": ["1", 2]},
            "components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "a"}]}]
        });
        assert_eq!(codes("MessageCreateRequest", ok), vec![]);
        let bad = json!({
            "content": 5,
            "embeds": [{"title": "t".repeat(257), "colour": 1, "color": -1, "url": "no scheme"}],
            "allowed_mentions": {"parse": ["everybody"], "users": ["01"]},
            "components": [{"type": 1, "components": [{"type": 2, "style": 9, "custom_id": ""}]},
                           {"type": 1, "components": []}],
            "sticker_ids": ["1", "2", "3", "4"],
            "nonce": "n".repeat(26),
        });
        let mut got = codes("MessageCreateRequest", bad);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("allowed_mentions.parse.0".into(), "BASE_TYPE_CHOICES"),
                ("allowed_mentions.users.0".into(), "NUMBER_TYPE_COERCE"),
                (
                    "components.0.components.0.custom_id".into(),
                    "BASE_TYPE_MIN_LENGTH"
                ),
                (
                    "components.0.components.0.style".into(),
                    "BASE_TYPE_CHOICES"
                ),
                ("components.1.components".into(), "BASE_TYPE_MIN_LENGTH"),
                ("content".into(), "STRING_TYPE_CONVERT"),
                ("embeds.0.color".into(), "NUMBER_TYPE_MIN"),
                ("embeds.0.colour".into(), "UNKNOWN_FIELD"),
                ("embeds.0.title".into(), "BASE_TYPE_MAX_LENGTH"),
                ("embeds.0.url".into(), "URL_TYPE_INVALID_URL"),
                ("nonce".into(), "BASE_TYPE_MAX_LENGTH"),
                ("sticker_ids".into(), "BASE_TYPE_MAX_LENGTH"),
            ]
        );
        assert_eq!(
            codes(
                "CreateTextThreadWithMessageRequest",
                json!({"auto_archive_duration": 30})
            ),
            vec![
                ("name".into(), "BASE_TYPE_REQUIRED"),
                ("auto_archive_duration".into(), "BASE_TYPE_CHOICES"),
            ]
        );
        // A type list, a boolean where a string goes, an integer in range.
        assert_eq!(
            codes(
                "CreateTextThreadWithMessageRequest",
                json!({"name": true, "rate_limit_per_user": 21601})
            ),
            vec![
                ("name".into(), "STRING_TYPE_CONVERT"),
                ("rate_limit_per_user".into(), "NUMBER_TYPE_MAX"),
            ]
        );
        // allOf: the multipart schema allows the message's fields and the files'.
        let Route::Found(op) = doc.route("POST", "/channels/1/messages") else {
            panic!()
        };
        let multipart = op.body_schema("multipart/form-data").unwrap();
        assert_eq!(
            doc.validate(multipart, &json!({"content": "x", "files[0]": "bytes"})),
            vec![]
        );
        assert_eq!(
            doc.validate(multipart, &json!({"contents": "x"}))[0].code,
            "UNKNOWN_FIELD"
        );
        let (_, problems) = op.check_body(Some("multipart/form-data; boundary=x"), b"--x--");
        assert_eq!(problems[0].code, "CONTENT_TYPE_INVALID");
        let (_, problems) = op.check_body(Some("application/json"), b"{nope");
        assert_eq!(problems[0].code, "JSON_INVALID");
        let (_, problems) = op.check_body(None, b"");
        assert_eq!(problems[0].code, "BASE_TYPE_REQUIRED");
    }

    #[test]
    fn errors_nest_as_discord_writes_them() {
        let problems = vec![
            Problem::new(
                &["embeds".into(), "0".into(), "title".into()],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 256 or fewer in length.",
            ),
            Problem::new(&[], "X", "y"),
        ];
        assert_eq!(
            errors_json(&problems),
            json!({"embeds": {"0": {"title": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length."}]}}},
                   "_errors": [{"code": "X", "message": "y"}]})
        );
    }
}
