//! A small builder for update and condition expressions: placeholders are numbered, so map keys that come
//! from data (bucket numbers, sequence numbers) never need escaping and never collide.

use crate::keys::Item;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

#[derive(Default)]
pub(crate) struct Expr {
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    delete: Vec<String>,
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// A placeholder for an attribute name or map key.
    pub fn name(&mut self, name: &str) -> String {
        let ph = format!("#n{}", self.names.len());
        self.names.insert(ph.clone(), name.to_string());
        ph
    }

    /// A placeholder for a value.
    pub fn value(&mut self, v: AttributeValue) -> String {
        let ph = format!(":v{}", self.values.len());
        self.values.insert(ph.clone(), v);
        ph
    }

    pub fn set(&mut self, clause: String) {
        self.set.push(clause);
    }

    pub fn remove(&mut self, path: String) {
        self.remove.push(path);
    }

    pub fn add(&mut self, clause: String) {
        self.add.push(clause);
    }

    pub fn delete(&mut self, clause: String) {
        self.delete.push(clause);
    }

    pub fn condition(&mut self, clause: String) {
        self.conditions.push(clause);
    }

    /// `map.key = if_not_exists(map.key, 0) + delta`: a counter inside a map attribute (ADD works on
    /// top-level attributes only).
    pub fn add_to_map(&mut self, map: &str, key: &str, delta: i64) {
        let (m, k, zero, d) =
            (self.name(map), self.name(key), self.value(crate::keys::n(0)), self.value(crate::keys::n(delta)));
        self.set(format!("{m}.{k} = if_not_exists({m}.{k}, {zero}) + {d}"));
    }

    fn update_expression(&self) -> String {
        let mut parts = Vec::new();
        for (word, clauses) in
            [("SET", &self.set), ("REMOVE", &self.remove), ("ADD", &self.add), ("DELETE", &self.delete)]
        {
            if !clauses.is_empty() {
                parts.push(format!("{word} {}", clauses.join(", ")));
            }
        }
        parts.join(" ")
    }

    /// Applies the expression to an UpdateItem request for `key`.
    pub fn apply(self, req: UpdateItemFluentBuilder, key: Item) -> UpdateItemFluentBuilder {
        let mut req = req.set_key(Some(key)).update_expression(self.update_expression());
        if !self.conditions.is_empty() {
            req = req.condition_expression(self.conditions.join(" AND "));
        }
        if !self.names.is_empty() {
            req = req.set_expression_attribute_names(Some(self.names));
        }
        if !self.values.is_empty() {
            req = req.set_expression_attribute_values(Some(self.values));
        }
        req
    }
}
