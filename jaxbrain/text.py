"""How jaxbrain's messages and pages word a count: `counted(1, 'patient')` is '1 patient',
`counted(3, 'slice')` '3 slices'."""


def counted(number: int, noun: str, plural: str | None = None) -> str:
  """`number` and `noun`, the noun in the plural (`plural`, else noun + 's') unless number is 1."""
  return f'{number} {noun if number == 1 else plural or noun + "s"}'
