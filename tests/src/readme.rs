//! The README's SQL, for the tests and benchmarks that run it verbatim.

/// The README, as built.
pub const README: &str = include_str!("../../README.md");

/// The SQL statements of the README's section headed `heading` (a whole line, such as
/// `## Example queries`), up to the next heading of any level: its ```sql blocks, split at `;`,
/// each with its leading comment lines. Empty when there is no such section.
pub fn sql_statements(heading: &str) -> Vec<String> {
    let Some(section) = README.split(&format!("\n{heading}\n")).nth(1) else { return Vec::new() };
    let section = section.split("\n#").next().unwrap_or_default();
    section
        .split("```sql\n")
        .skip(1)
        .flat_map(|block| block.split("```").next().unwrap_or_default().split(';').map(str::trim))
        .filter(|statement| !statement.is_empty())
        .map(str::to_owned)
        .collect()
}
