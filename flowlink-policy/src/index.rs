//! An index over the rules' `service` and `tool` globs, so that a policy with thousands of rules
//! decides a call by looking only at the rules that could match it, not at all of them.
//!
//! Each field keeps exact names in a hash map, every other glob in one `GlobSet` (one automaton
//! pass per call), and the rules without a selector in an "always" list. The candidates for a
//! call are the rules selected by both fields, visited in evaluation order.

use std::collections::HashMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::pattern::{Pattern, Patterns};
use crate::policy::Rule;

/// Below this many rules a linear scan is as fast and the index is not built.
pub(crate) const INDEX_MIN_RULES: usize = 32;

#[derive(Debug, Clone)]
struct FieldIndex {
    exact: HashMap<String, Vec<usize>>,
    set: GlobSet,
    owners: Vec<usize>,
    always: Vec<usize>,
}

impl FieldIndex {
    fn build<'r>(rules: impl Iterator<Item = (usize, &'r Patterns)>) -> Result<FieldIndex, String> {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut builder = GlobSetBuilder::new();
        let mut owners = Vec::new();
        let mut always = Vec::new();
        for (i, patterns) in rules {
            if patterns.0.is_empty() || patterns.0.iter().any(|p| matches!(p, Pattern::Any)) {
                always.push(i);
                continue;
            }
            for p in &patterns.0 {
                match p {
                    Pattern::Exact(name) => exact.entry(name.clone()).or_default().push(i),
                    other => {
                        let glob = GlobBuilder::new(other.text())
                            .literal_separator(false)
                            .case_insensitive(false)
                            .backslash_escape(true)
                            .build()
                            .map_err(|e| e.to_string())?;
                        builder.add(glob);
                        owners.push(i);
                    }
                }
            }
        }
        Ok(FieldIndex {
            exact,
            set: builder.build().map_err(|e| e.to_string())?,
            owners,
            always,
        })
    }

    fn mark(&self, name: &str, bits: &mut [u64]) {
        let mut set = |i: usize| bits[i / 64] |= 1 << (i % 64);
        self.always.iter().for_each(|&i| set(i));
        if let Some(list) = self.exact.get(name) {
            list.iter().for_each(|&i| set(i));
        }
        for g in self.set.matches(name) {
            set(self.owners[g]);
        }
    }
}

/// The index of a policy's (priority-sorted) rules.
#[derive(Debug, Clone)]
pub(crate) struct RuleIndex {
    tool: FieldIndex,
    service: FieldIndex,
    len: usize,
}

impl RuleIndex {
    /// Builds the index; the globs were validated when the rules were compiled.
    pub(crate) fn build(rules: &[Rule]) -> Result<RuleIndex, String> {
        Ok(RuleIndex {
            tool: FieldIndex::build(rules.iter().enumerate().map(|(i, r)| (i, &r.tool)))?,
            service: FieldIndex::build(rules.iter().enumerate().map(|(i, r)| (i, &r.service)))?,
            len: rules.len(),
        })
    }

    /// Indices of the rules whose `service` and `tool` selectors both match, ascending (that is,
    /// in evaluation order).
    pub(crate) fn candidates(&self, service: &str, tool: &str) -> Vec<usize> {
        let words = self.len.div_ceil(64);
        let mut by_tool = vec![0u64; words];
        let mut by_service = vec![0u64; words];
        self.tool.mark(tool, &mut by_tool);
        self.service.mark(service, &mut by_service);
        let mut out = Vec::new();
        for (w, (a, b)) in by_tool.iter().zip(&by_service).enumerate() {
            let mut both = a & b;
            while both != 0 {
                let bit = both.trailing_zeros() as usize;
                out.push(w * 64 + bit);
                both &= both - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    #[test]
    fn candidates_are_exactly_the_rules_a_linear_scan_selects() {
        let selectors = [
            ("", ""),
            ("service = \"git\"\n", "tool = \"git_push\"\n"),
            ("service = [\"git\", \"shell*\"]\n", ""),
            ("", "tool = \"run_*\"\n"),
            ("service = \"*\"\n", "tool = \"*_command\"\n"),
            (
                "service = \"db-?\"\n",
                "tool = [\"query\", \"exec{ute,}\"]\n",
            ),
            ("", "tool = \"*delete*\"\n"),
        ];
        let mut src = String::from("version = 1\n");
        for i in 0..200 {
            let (svc, tool) = selectors[i % selectors.len()];
            src.push_str(&format!(
                "[[rules]]\nid = \"r{i}\"\npriority = {}\n{svc}{tool}action = \"allow\"\n",
                i % 7
            ));
        }
        let policy = Policy::from_toml(&src).unwrap();
        let rules = policy.rules_for_test();
        let index = RuleIndex::build(rules).unwrap();
        for service in ["git", "shell-2", "db-1", "db-12", "other", ""] {
            for tool in [
                "git_push",
                "run_x",
                "run_command",
                "query",
                "exec",
                "execute",
                "bulk_delete_all",
                "x",
            ] {
                let linear: Vec<usize> = (0..rules.len())
                    .filter(|&i| rules[i].tool.is_match(tool) && rules[i].service.is_match(service))
                    .collect();
                assert_eq!(index.candidates(service, tool), linear, "{service} {tool}");
            }
        }
    }
}
