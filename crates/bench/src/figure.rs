//! One measured figure: printed as it comes, in the table `mycluster bench` shows.

/// One measured figure: what, how much, and what produced it.
pub struct Figure {
    pub name: String,
    pub value: String,
    pub detail: String,
}

/// Prints a figure's line and returns the figure.
pub fn report(name: &str, value: impl Into<String>, detail: impl Into<String>) -> Figure {
    let figure = Figure {
        name: name.to_string(),
        value: value.into(),
        detail: detail.into(),
    };
    println!(
        "{:<44} {:>22}   {}",
        figure.name, figure.value, figure.detail
    );
    figure
}
