//! Shared helpers for the integration tests.
#![allow(dead_code)]

use flowlink_policy::{Decision, Explanation, Labels, Policy, ToolCall};
use serde_json::Value;

/// Loads a policy or fails the test with the error text.
pub fn policy(src: &str) -> Policy {
    match Policy::from_toml(src) {
        Ok(p) => p,
        Err(e) => panic!("policy should load: {e}\n{src}"),
    }
}

/// A call to decide, with owned parts.
pub struct Call {
    pub agent: String,
    pub service: String,
    pub tool: String,
    pub args: Value,
    pub labels: Labels,
}

pub fn call(agent: &str, service: &str, tool: &str, args: Value) -> Call {
    Call {
        agent: agent.into(),
        service: service.into(),
        tool: tool.into(),
        args,
        labels: Labels::new(),
    }
}

impl Call {
    pub fn label(mut self, k: &str, v: &str) -> Call {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn as_call(&self) -> ToolCall<'_> {
        ToolCall {
            agent: &self.agent,
            service: &self.service,
            tool: &self.tool,
            arguments: &self.args,
            labels: &self.labels,
        }
    }

    pub fn decide(&self, p: &Policy) -> Decision {
        p.decide(&self.as_call())
    }

    pub fn explain(&self, p: &Policy) -> Explanation {
        p.explain(&self.as_call())
    }
}
