//! Reading one COCO entry's fields from JSON with errors that name the entry and the field
//! (serde's own errors give a line and column only).

use std::path::Path;

use serde_json::{Map, Value};

use super::error::CocoError;

/// One JSON object of a COCO file (an image, a category, an annotation or a detection) and
/// how errors name it.
pub struct Entry<'a> {
    path: &'a Path,
    name: String,
    object: &'a Map<String, Value>,
}

impl<'a> Entry<'a> {
    /// Entry `index` of the list `list`; an error unless it is a JSON object.
    pub fn new(
        path: &'a Path,
        list: &str,
        index: usize,
        value: &'a Value,
    ) -> Result<Self, CocoError> {
        let name = format!("{list}[{index}]");
        match value.as_object() {
            Some(object) => {
                // Name the entry by its id too, where it has a readable one.
                let name = match object.get("id").and_then(Value::as_u64) {
                    Some(id) => format!("{name} (id {id})"),
                    None => name,
                };
                Ok(Self { path, name, object })
            }
            None => Err(CocoError::File {
                path: path.to_path_buf(),
                message: format!("{name}: expected a JSON object, got {}", kind(value)),
            }),
        }
    }

    /// An error about `field` of this entry.
    pub fn error(&self, field: &'static str, message: impl Into<String>) -> CocoError {
        CocoError::Entry {
            path: self.path.to_path_buf(),
            entry: self.name.clone(),
            field,
            message: message.into(),
        }
    }

    fn get(&self, field: &'static str) -> Result<&'a Value, CocoError> {
        self.object
            .get(field)
            .ok_or_else(|| self.error(field, "missing"))
    }

    /// A non-negative integer id or count.
    pub fn id(&self, field: &'static str) -> Result<u64, CocoError> {
        let value = self.get(field)?;
        value.as_u64().ok_or_else(|| {
            self.error(
                field,
                format!("expected a non-negative integer, got {value}"),
            )
        })
    }

    /// A finite number; `None` when the field is absent.
    pub fn optional_number(&self, field: &'static str) -> Result<Option<f64>, CocoError> {
        match self.object.get(field) {
            None => Ok(None),
            Some(value) => match value.as_f64().filter(|v| v.is_finite()) {
                Some(number) => Ok(Some(number)),
                None => Err(self.error(field, format!("expected a finite number, got {value}"))),
            },
        }
    }

    /// A finite number.
    pub fn number(&self, field: &'static str) -> Result<f64, CocoError> {
        self.optional_number(field)?
            .ok_or_else(|| self.error(field, "missing"))
    }

    /// A string.
    pub fn string(&self, field: &'static str) -> Result<&'a str, CocoError> {
        let value = self.get(field)?;
        value
            .as_str()
            .ok_or_else(|| self.error(field, format!("expected a string, got {}", kind(value))))
    }

    /// A box `[x, y, width, height]` of four finite numbers.
    pub fn bbox(&self, field: &'static str) -> Result<[f64; 4], CocoError> {
        let value = self.get(field)?;
        let numbers: Option<Vec<f64>> = value.as_array().map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_f64().filter(|v| v.is_finite()))
                .collect()
        });
        match (numbers, value.as_array().map(Vec::len)) {
            (Some(numbers), Some(4)) if numbers.len() == 4 => {
                Ok([numbers[0], numbers[1], numbers[2], numbers[3]])
            }
            _ => Err(self.error(
                field,
                format!("expected [x, y, width, height] (four finite numbers), got {value}"),
            )),
        }
    }
}

/// The top-level list `name` of a COCO file.
pub fn list<'a>(path: &Path, root: &'a Value, name: &str) -> Result<&'a Vec<Value>, CocoError> {
    root.get(name)
        .and_then(Value::as_array)
        .ok_or_else(|| CocoError::File {
            path: path.to_path_buf(),
            message: format!("expected a top-level \"{name}\" list (COCO's instances format)"),
        })
}

/// Read and parse a JSON file.
pub fn read(path: &Path) -> Result<Value, CocoError> {
    let file_error = |message: String| CocoError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| file_error(format!("not JSON: {e}")))
}

/// What kind of JSON value this is, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
