from layotto.cli import main

main()
