//! Reading a result row by column position, the same way on SQLite and PostgreSQL, so
//! that a row's layout is written once, beside its `SELECT` list.

/// A result row whose columns are read by position.
pub(crate) trait Columns {
    /// The backend's error.
    type Error;
    /// A text column.
    fn text(&self, index: usize) -> Result<String, Self::Error>;
    /// An integer column.
    fn integer(&self, index: usize) -> Result<i64, Self::Error>;

    /// The text columns at `indices`.
    fn texts<const N: usize>(&self, indices: [usize; N]) -> Result<[String; N], Self::Error> {
        let mut texts: [String; N] = std::array::from_fn(|_| String::new());
        for (text, index) in texts.iter_mut().zip(indices) {
            *text = self.text(index)?;
        }
        Ok(texts)
    }
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, index: usize) -> Result<String, rusqlite::Error> {
        self.get(index)
    }

    fn integer(&self, index: usize) -> Result<i64, rusqlite::Error> {
        self.get(index)
    }
}

impl Columns for sqlx::postgres::PgRow {
    type Error = sqlx::Error;

    fn text(&self, index: usize) -> Result<String, sqlx::Error> {
        sqlx::Row::try_get(self, index)
    }

    fn integer(&self, index: usize) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get(self, index)
    }
}
