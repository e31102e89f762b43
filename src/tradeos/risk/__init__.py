"""Risk: risk profiles, pre-trade rules, the account's trading state, position sizing and
portfolio risk."""
