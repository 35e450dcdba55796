//! Finding a unit's position by its name, without a second copy of every name.
//!
//! A `HashMap<String, usize>` beside a list of units holds each name twice (the copy a heap
//! allocation of its own) in buckets of 32 bytes. At thousands of units that was ~100 bytes a
//! unit for each such index. This index holds only positions (4 bytes a bucket); the names
//! stay in the list they index, which every call is given.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

#[derive(Clone, Debug, Default)]
pub struct NameIndex {
    table: HashTable<u32>,
    hasher: RandomState,
}

impl NameIndex {
    /// An index of `len` names, the name at each position given by `name_of`. Where a name
    /// comes twice, the later position is the one found (as collecting into a map would).
    pub fn new<'a>(len: usize, name_of: impl Fn(usize) -> &'a str) -> NameIndex {
        let mut index = NameIndex {
            table: HashTable::with_capacity(len),
            hasher: RandomState::new(),
        };
        for i in 0..len {
            index.insert(i, &name_of);
        }
        index
    }

    /// `name_of(position)` added (the list it indexes grew by one), as `new` would have
    /// indexed it: a name that was there already is found at its new position.
    pub fn insert<'a>(&mut self, position: usize, name_of: impl Fn(usize) -> &'a str) {
        let name = name_of(position);
        let position = u32::try_from(position).expect("fewer than 2^32 units");
        let hasher = &self.hasher;
        match self.table.entry(
            hasher.hash_one(name),
            |&j: &u32| name_of(j as usize) == name,
            |&j: &u32| hasher.hash_one(name_of(j as usize)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = position,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(position);
            }
        }
    }

    /// The position of `name`, in the same list the index was made of.
    pub fn find<'a>(&self, name: &str, name_of: impl Fn(usize) -> &'a str) -> Option<usize> {
        self.table
            .find(self.hasher.hash_one(name), |&j| name_of(j as usize) == name)
            .map(|&j| j as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::NameIndex;

    #[test]
    fn finds_every_name_and_only_those() {
        let names: Vec<String> = (0..5000).map(|i| format!("unit-{i}")).collect();
        let index = NameIndex::new(names.len(), |i| &names[i]);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(index.find(n, |j| &names[j]), Some(i));
        }
        assert_eq!(index.find("unit-5000", |j| &names[j]), None);
        assert_eq!(index.find("", |j| &names[j]), None);
    }

    #[test]
    fn a_name_given_twice_is_found_at_its_later_position() {
        let names = ["a", "b", "a"];
        let index = NameIndex::new(names.len(), |i| names[i]);
        assert_eq!(index.find("a", |j| names[j]), Some(2));
        assert_eq!(index.find("b", |j| names[j]), Some(1));
    }

    #[test]
    fn a_name_inserted_later_is_found_with_the_others() {
        let mut names: Vec<String> = (0..100).map(|i| format!("unit-{i}")).collect();
        let mut index = NameIndex::new(names.len(), |i| &names[i]);
        names.push("late".into());
        index.insert(100, |i| &names[i]);
        assert_eq!(index.find("late", |j| &names[j]), Some(100));
        assert_eq!(index.find("unit-7", |j| &names[j]), Some(7));
        // Again under a name it has: found at the new position, as `new` would.
        names.push("unit-3".into());
        index.insert(101, |i| &names[i]);
        assert_eq!(index.find("unit-3", |j| &names[j]), Some(101));
    }
}
