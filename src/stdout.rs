//! What commands print for people and scripts: text on stdout, and the
//! aligned tables of `list`, `status` and `fleet`.

use std::io::Write;

/// Writes `text` to stdout. A closed pipe (`hacfg list | head -1`) ends
/// the output quietly: the reader has all it wanted.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("unable to write to stdout")
        }
        _ => Ok(()),
    }
}

/// An aligned text table: columns two spaces apart, no trailing blanks.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    use std::fmt::Write as _;
    let header = header.map(String::from);
    let mut widths = [0; N];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_aligned_by_characters_with_no_trailing_blanks() {
        let rows = [
            ["é1".to_string(), "up".to_string(), String::new()],
            ["s22".to_string(), "down".to_string(), "x".to_string()],
        ];
        assert_eq!(
            super::table(["NAME", "STATUS", "NOTE"], &rows),
            "NAME  STATUS  NOTE\né1    up\ns22   down    x\n"
        );
    }
}
