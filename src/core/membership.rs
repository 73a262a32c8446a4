//! Roles from a membership view: ordered by numeric session id, lowest is the head.

use super::types::{Member, NodeId, Role};

/// One snapshot of the chain's members, sorted by session id with duplicates removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    members: Vec<Member>,
}

impl View {
    pub fn new(mut members: Vec<Member>) -> Self {
        // Numeric order, never string order: "ff" < "100" as numbers but not as text.
        members.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.addr.cmp(&b.addr)));
        members.dedup_by_key(|m| m.id);
        View { members }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn position(&self, id: NodeId) -> Option<usize> {
        self.members.binary_search_by_key(&id, |m| m.id).ok()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.position(id).is_some()
    }

    pub fn head(&self) -> Option<&Member> {
        self.members.first()
    }

    pub fn tail(&self) -> Option<&Member> {
        self.members.last()
    }

    pub fn predecessor(&self, id: NodeId) -> Option<&Member> {
        let i = self.position(id)?;
        i.checked_sub(1).map(|p| &self.members[p])
    }

    pub fn successor(&self, id: NodeId) -> Option<&Member> {
        let i = self.position(id)?;
        self.members.get(i + 1)
    }

    /// Members after `id` in chain order.
    pub fn below(&self, id: NodeId) -> &[Member] {
        match self.position(id) {
            Some(i) => &self.members[i + 1..],
            None => &[],
        }
    }

    pub fn role_of(&self, id: NodeId) -> Role {
        match self.position(id) {
            None => Role::Outside,
            Some(_) if self.members.len() == 1 => Role::Single,
            Some(0) => Role::Head,
            Some(i) if i + 1 == self.members.len() => Role::Tail,
            Some(_) => Role::Middle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: NodeId) -> Member {
        Member {
            id,
            addr: format!("h:{id}"),
        }
    }

    #[test]
    fn roles_follow_numeric_session_order() {
        // 0xff < 0x100 numerically, although "100" < "ff" as strings.
        let v = View::new(vec![m(0x100), m(0xff), m(0x1_0000_0000)]);
        assert_eq!(v.head().map(|h| h.id), Some(0xff));
        assert_eq!(v.tail().map(|t| t.id), Some(0x1_0000_0000));
        assert_eq!(v.role_of(0xff), Role::Head);
        assert_eq!(v.role_of(0x100), Role::Middle);
        assert_eq!(v.role_of(0x1_0000_0000), Role::Tail);
        assert_eq!(v.role_of(7), Role::Outside);
        assert_eq!(v.predecessor(0x100).map(|p| p.id), Some(0xff));
        assert_eq!(v.successor(0x100).map(|p| p.id), Some(0x1_0000_0000));
        assert_eq!(v.predecessor(0xff), None);
        assert_eq!(v.successor(0x1_0000_0000), None);
        assert_eq!(v.below(0xff).len(), 2);
    }

    #[test]
    fn single_member_is_head_and_tail_and_duplicates_collapse() {
        let v = View::new(vec![m(5), m(5)]);
        assert_eq!(v.members().len(), 1);
        assert_eq!(v.role_of(5), Role::Single);
    }
}
